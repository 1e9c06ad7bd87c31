"""The collector's Kafka producer: idempotent, acks=all, and a ``send`` that returns only once the
broker has every record of a request, so that a 2xx from the collector means the events are
stored.

One ``EventWriter`` per worker process, shared by its request threads:

* The wait for acknowledgements is shared: each request produces its records with one countdown
  object as their delivery callback and waits on its Event; one poll thread serves every
  delivery report (callbacks run on it only, so the countdown needs no lock). Request threads
  never poll or flush.
* Kafka away: librdkafka reports all brokers down through ``error_cb`` (served by the same poll
  thread). The writer then refuses new requests at once (KafkaUnavailable -> 503 with
  Retry-After, no thread held) and purges the records still queued, so the requests waiting for
  them get their 503 within milliseconds and those records are never sent. A probe thread asks
  the broker for metadata until it answers, then the writer takes requests again.
* A fatal producer error (the idempotent producer's state is lost) retires the producer and
  builds a new one; the old one's queued records are purged (their requests get a 503).
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from confluent_kafka import KafkaError, KafkaException, Producer

log = logging.getLogger(__name__)

# How long a 503 tells a client to wait: about one probe of a broker that came back.
RETRY_AFTER_S = 1

# librdkafka's own log lines. While Kafka is known to be away its failed reconnects (one a second)
# are left out: the writer has said so once, and says when Kafka is back.
_LIBRDKAFKA_LOG = logging.getLogger(__name__ + ".librdkafka")


class DeliveryError(RuntimeError):
    """Kafka did not confirm every record of a request; it may hold some of them. The client
    retries with the same event_ids (the sink drops repeats)."""


class KafkaUnavailable(DeliveryError):
    """Kafka is known to be away: nothing of the request was produced."""


class _Countdown:
    """One request's delivery callback: counts its reports down, keeps the first error.

    The request thread waits on a plain lock held from the start and released by the last
    report: a C-level acquire/release, where a threading.Event (a Condition, a lock per waiter,
    Python code on both sides) cost about a fifth of a GET's Python time under load."""

    __slots__ = ("remaining", "error", "_done")

    def __init__(self, n: int) -> None:
        self.remaining = n
        self.error: KafkaError | None = None
        self._done = threading.Lock()
        self._done.acquire()

    def __call__(self, err: KafkaError | None, msg: Any) -> None:  # on the poll thread only
        if err is not None and self.error is None:
            self.error = err
        self.remaining -= 1
        if self.remaining == 0:
            self._done.release()

    def wait(self, timeout: float) -> bool:
        """True once every report came, False after ``timeout`` seconds."""
        return self._done.acquire(timeout=timeout) if timeout > 0 else self._done.acquire(False)


# States, as /healthz reports them.
STARTING, UP, DOWN, CLOSED = "starting", "up", "down", "closed"


class EventWriter:
    def __init__(
        self,
        bootstrap: str | Mapping[str, Any],
        topic: str,
        timeout_s: float,
        *,
        producer_factory: Callable[[dict[str, Any]], Any] = Producer,
        probe_interval_s: float = 0.2,
        max_queued: int = 50_000,
        **config: Any,
    ) -> None:
        self.topic = topic
        self.timeout_s = timeout_s
        self.probe_interval_s = probe_interval_s
        self.max_queued = max_queued  # below librdkafka's queue.buffering.max.messages (100,000)
        self.config = {
            # the brokers, or a whole connection (Settings.kafka_client(): with SASL, the user)
            **({"bootstrap.servers": bootstrap} if isinstance(bootstrap, str) else bootstrap),
            "enable.idempotence": True,
            "acks": "all",
            # Concurrent requests share one produce request to the broker (and the broker's work):
            # at ab -c 16 about 2x the requests per second of linger.ms=0 (the README's table). 5 ms
            # did as well on a saturated machine and 1.5x for batches, but capped -c 16 at 16
            # requests per ~6 ms on a quieter one (0.56x the do-nothing app); a lone request waits
            # up to 2 ms more.
            "linger.ms": 2,
            "message.timeout.ms": int(timeout_s * 1000),
            "reconnect.backoff.ms": 100,  # doubling to 1 s: Kafka back is noticed within about a second
            "reconnect.backoff.max.ms": 1000,
            "client.id": "questlog-collector",
            "error_cb": self._on_error,
            "logger": _LIBRDKAFKA_LOG,  # must be a logging.Logger: anything else stops the poll thread silently
            "log.connection.close": False,
            **config,
        }
        self._factory = producer_factory
        self._producer = self._factory(self.config)
        self._retired: list[tuple[Any, float]] = []  # producers replaced after a fatal error
        self.state = STARTING
        self.last_error = ""
        _LIBRDKAFKA_LOG.addFilter(lambda record: self.state != DOWN or "FAIL" not in record.getMessage())
        self._wake_probe = threading.Event()
        self._closed = threading.Event()
        self._poller = threading.Thread(target=self._poll, name="kafka-poll", daemon=True)
        self._prober = threading.Thread(target=self._probe, name="kafka-probe", daemon=True)
        self._poller.start()
        self._prober.start()

    # Request threads --------------------------------------------------------------------------

    @property
    def available(self) -> bool:
        """Whether a request should be produced at all (not while Kafka is known to be away)."""
        return self.state in (STARTING, UP)

    def send(self, records: Sequence[tuple[bytes, bytes]]) -> None:
        """Produce every (key, value) and return once Kafka has confirmed all of them.

        Raises KafkaUnavailable if nothing was produced (Kafka away, queue full), DeliveryError
        if some records may have been stored and others not."""
        if not self.available:
            raise KafkaUnavailable(f"Kafka is not reachable ({self.last_error or self.state})")
        producer = self._producer
        if len(producer) + len(records) > self.max_queued:
            raise KafkaUnavailable(f"{len(producer)} records wait for Kafka already")
        countdown = _Countdown(len(records))
        produce, topic = producer.produce, self.topic
        deadline = time.monotonic() + self.timeout_s + 2  # the delivery reports come by message.timeout.ms
        produced = 0
        try:
            for key, value in records:
                while True:
                    try:
                        produce(topic, value, key, on_delivery=countdown)
                        break
                    except BufferError:  # the local queue is full: the poll thread drains it
                        if time.monotonic() > deadline or not self.available:
                            raise
                        time.sleep(0.005)
                produced += 1
        except (BufferError, KafkaException) as exc:
            if produced == 0:
                raise KafkaUnavailable(f"Kafka did not take the events: {exc!r}") from None
            raise DeliveryError(f"produced {produced} of {len(records)} events, then: {exc!r}") from None
        if not countdown.wait(deadline - time.monotonic()):
            raise DeliveryError(f"Kafka did not confirm {countdown.remaining} of {len(records)} events in time")
        if countdown.error is not None:
            raise DeliveryError(f"Kafka did not store every event: {countdown.error.str()}")

    # The poll thread: delivery reports, errors, and producers being replaced ------------------

    def _poll(self) -> None:
        while not self._closed.is_set():
            producer = self._producer
            producer.poll(0.05)
            if self.state == DOWN and len(producer):
                # Records produced while Kafka is away (a request that checked just before it went)
                # are not sent later: their requests get a 503 now.
                producer.purge(in_queue=True, in_flight=False)
            if self._retired:
                self._drain_retired()

    def _drain_retired(self) -> None:
        still = []
        for old, until in self._retired:
            old.poll(0)
            if len(old) and time.monotonic() < until:
                still.append((old, until))
        self._retired = still

    def _on_error(self, err: KafkaError) -> None:  # on the poll thread (error_cb is served by poll)
        self.last_error = err.str()
        if err.fatal():
            log.error("Kafka producer fatal error, building a new producer: %s", err.str())
            self._rebuild()
        elif err.code() == KafkaError._ALL_BROKERS_DOWN:
            if self.state != DOWN:
                log.warning("Kafka is not reachable (%s): answering 503 until it is back", err.str())
            self.state = DOWN
            self._producer.purge(in_queue=True, in_flight=False)
            self._wake_probe.set()
        elif self.state != DOWN and err.code() != KafkaError._TRANSPORT:
            log.warning("Kafka producer: %s", err.str())

    def _rebuild(self) -> None:
        old = self._producer
        self.state = DOWN
        try:
            old.purge(in_queue=True, in_flight=True)
        except KafkaException:
            pass
        self._retired.append((old, time.monotonic() + self.timeout_s + 2))
        self._producer = self._factory(self.config)
        self._wake_probe.set()

    # The probe thread: Kafka back? ------------------------------------------------------------

    def _probe(self) -> None:
        while not self._closed.is_set():
            if self.state == UP:
                self._wake_probe.wait(1.0)
                self._wake_probe.clear()
                continue
            try:
                self._producer.list_topics(self.topic, timeout=1.0)
            except KafkaException:
                self._closed.wait(self.probe_interval_s)
                continue
            if self.state == DOWN:
                log.warning("Kafka is reachable again: taking events")
            self.last_error = ""
            self.state = UP

    def close(self, timeout_s: float = 5.0) -> None:
        """Deliver what is queued (requests waiting for it get their answer), then stop."""
        if self._closed.is_set():
            return
        self._closed.set()  # the poll thread stops; from here this thread serves the reports
        self._wake_probe.set()
        self._poller.join(1.0)
        left = self._producer.flush(timeout_s)
        self.state = CLOSED
        log.info("Kafka producer closed%s", f"; {left} records undelivered" if left else "")
