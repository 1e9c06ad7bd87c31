"""The collector's Kafka producer: idempotent, acks=all, and a send that returns only once the
broker has every event, so that a 2xx from the collector means the events are stored."""

from __future__ import annotations

import json
import logging
import threading
import time
from concurrent.futures import Future, wait
from typing import Any, Iterable

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)


class DeliveryError(RuntimeError):
    """Kafka did not confirm the events in time; the client should retry (same event_ids)."""


class EventTooLarge(ValueError):
    """An event is larger than a Kafka message may be; retrying cannot help."""


class EventWriter:
    def __init__(self, bootstrap: str, topic: str, timeout_s: float, **config: Any) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self._producer = Producer({
            "bootstrap.servers": bootstrap,
            "enable.idempotence": True,
            "acks": "all",
            "linger.ms": 2,
            "message.timeout.ms": int(timeout_s * 1000),
            "client.id": "questlog-collector",
            **config,
        })
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._poller.start()

    def _poll(self) -> None:
        while not self._closed.is_set():
            self._producer.poll(0.1)

    def send(self, events: Iterable[dict[str, Any]]) -> None:
        """Produce ``events`` (keyed by event_id) and wait until Kafka has all of them."""
        futures = []
        deadline = time.monotonic() + self.timeout_s
        for event in events:
            future: Future = Future()
            futures.append(future)

            def on_delivery(err, msg, future=future):
                if err is None:
                    future.set_result(msg.offset())
                elif err.code() == KafkaError.MSG_SIZE_TOO_LARGE:
                    future.set_exception(EventTooLarge(str(err)))
                else:
                    future.set_exception(DeliveryError(str(err)))

            value = json.dumps(event, separators=(",", ":")).encode()
            key = str(event["event_id"]).encode()
            while True:
                try:
                    self._producer.produce(self.topic, value, key=key, on_delivery=on_delivery)
                    break
                except BufferError:  # the local queue is full: wait for deliveries to drain it
                    if time.monotonic() > deadline:
                        raise DeliveryError("the producer's queue stayed full") from None
                    self._producer.poll(0.1)
                except KafkaException as exc:
                    if exc.args[0].code() == KafkaError.MSG_SIZE_TOO_LARGE:
                        raise EventTooLarge(str(exc)) from exc
                    raise DeliveryError(str(exc)) from exc
        done, pending = wait(futures, timeout=max(0.0, deadline - time.monotonic()) + 1)
        if pending:
            raise DeliveryError(f"Kafka did not confirm {len(pending)} of {len(futures)} events in time")
        for future in done:
            future.result()  # raises the error of a failed delivery

    def ping(self, timeout_s: float = 2.0) -> bool:
        try:
            self._producer.list_topics(self.topic, timeout=timeout_s)
            return True
        except KafkaException:
            return False

