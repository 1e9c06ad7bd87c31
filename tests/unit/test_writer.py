"""The collector's EventWriter against a stand-in for librdkafka's Producer: acks, Kafka away,
recovery, fatal errors, and a request that fails half-way."""

from __future__ import annotations

import threading
import time

import pytest
from confluent_kafka import KafkaError, KafkaException

from producer.writer import DOWN, UP, DeliveryError, EventWriter, KafkaUnavailable


class FakeProducer:
    """Holds produced records until the broker 'acks' them (on poll, like librdkafka); with the
    broker away it keeps them queued, as librdkafka does while it reconnects."""

    def __init__(self, config, broker):
        self.config, self.broker = config, broker
        self.queue: list = []
        self.lock = threading.Lock()
        self.fail_after: int | None = None  # produce raises after this many records

    def produce(self, topic, value, key=None, on_delivery=None):
        if self.fail_after is not None and self.fail_after <= 0:
            raise KafkaException(KafkaError(KafkaError._STATE, "producer in a bad state"))
        if self.fail_after is not None:
            self.fail_after -= 1
        with self.lock:
            self.queue.append((key, value, on_delivery))

    def __len__(self):
        return len(self.queue)

    def poll(self, timeout):
        if self.broker.pending_error is not None:
            err, self.broker.pending_error = self.broker.pending_error, None
            self.config["error_cb"](err)
        if self.broker.up:
            with self.lock:
                done, self.queue = self.queue, []
            for key, value, cb in done:
                self.broker.stored.append((key, value))
                cb(None, None)
        time.sleep(min(timeout, 0.005))
        return 0

    def purge(self, in_queue=True, in_flight=True):
        with self.lock:
            purged, self.queue = self.queue, []
        for _, _, cb in purged:
            cb(KafkaError(KafkaError._PURGE_QUEUE, "purged"), None)

    def list_topics(self, topic=None, timeout=-1):
        if not self.broker.up:
            time.sleep(min(timeout, 0.05))
            raise KafkaException(KafkaError(KafkaError._TRANSPORT, "no broker"))
        return object()

    def flush(self, timeout=None):
        self.poll(0)
        return len(self.queue)


class Broker:
    def __init__(self):
        self.up = True
        self.stored: list = []
        self.pending_error: KafkaError | None = None
        self.producers: list[FakeProducer] = []

    def factory(self, config):
        producer = FakeProducer(config, self)
        self.producers.append(producer)
        return producer

    def go_away(self):
        self.up = False
        self.pending_error = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")


@pytest.fixture
def broker():
    return Broker()


@pytest.fixture
def writer(broker):
    w = EventWriter("kafka:9092", "events", timeout_s=2.0, producer_factory=broker.factory, probe_interval_s=0.02)
    yield w
    w.close(0.1)


def records(n, prefix="e"):
    return [(f"default/{prefix}{i}".encode(), f'{{"event_id": "{prefix}{i}"}}'.encode()) for i in range(n)]


def wait_until(probe, timeout_s=3.0):
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if probe():
            return True
        time.sleep(0.01)
    return False


def test_the_config_is_durable(broker, writer):
    config = broker.producers[0].config
    assert (config["enable.idempotence"], config["acks"]) == (True, "all")
    assert config["message.timeout.ms"] == 2000


def test_send_returns_once_every_record_is_acknowledged(broker, writer):
    writer.send(records(100))
    assert [k for k, _ in broker.stored] == [k for k, _ in records(100)]
    assert wait_until(lambda: writer.state == UP)


def test_kafka_away_refuses_at_once_and_sends_nothing(broker, writer):
    writer.send(records(1, "before"))
    broker.go_away()
    assert wait_until(lambda: writer.state == DOWN)
    stored = len(broker.stored)
    started = time.monotonic()
    with pytest.raises(KafkaUnavailable):
        writer.send(records(10, "refused"))
    assert time.monotonic() - started < 0.05
    assert not writer.available
    assert len(broker.stored) == stored and len(broker.producers[0]) == 0


def test_a_request_waiting_when_kafka_goes_is_answered_fast_and_its_records_never_sent(broker, writer):
    broker.up = False  # records queue up, unacknowledged
    errors = []

    def request():
        try:
            writer.send(records(3, "waiting"))
        except DeliveryError as exc:
            errors.append((exc, time.monotonic()))

    thread = threading.Thread(target=request)
    thread.start()
    assert wait_until(lambda: len(broker.producers[0]) == 3)
    broker.pending_error = KafkaError(KafkaError._ALL_BROKERS_DOWN, "1/1 brokers are down")
    gone = time.monotonic()
    thread.join(2)
    assert errors and errors[0][1] - gone < 0.5  # purged: not the 2 s message timeout
    broker.up = True
    assert wait_until(lambda: writer.state == UP)
    writer.send(records(1, "after"))
    assert [k for k, _ in broker.stored] == [b"default/after0"]  # the purged ones never went


def test_the_writer_recovers_by_itself_when_kafka_is_back(broker, writer):
    broker.go_away()
    assert wait_until(lambda: writer.state == DOWN)
    broker.up = True
    assert wait_until(lambda: writer.state == UP, 2.0)
    writer.send(records(2))
    assert len(broker.stored) == 2


def test_a_fatal_error_builds_a_new_producer(broker, writer):
    broker.pending_error = KafkaError(KafkaError._FATAL, "idempotence state lost", fatal=True)
    assert wait_until(lambda: len(broker.producers) == 2)
    assert wait_until(lambda: writer.state == UP)
    writer.send(records(2))
    assert len(broker.stored) == 2 and len(broker.producers[1].queue) == 0


def test_a_failure_after_producing_began_is_a_delivery_error_not_a_refusal(broker, writer):
    broker.producers[0].fail_after = 2
    with pytest.raises(DeliveryError) as info:
        writer.send(records(5))
    assert not isinstance(info.value, KafkaUnavailable)  # some may be stored: the client gets every id
    broker.producers[0].fail_after = 0
    with pytest.raises(KafkaUnavailable):  # nothing produced: a plain refusal
        writer.send(records(5, "x"))


def test_an_overfull_queue_is_refused_before_anything_is_produced(broker):
    w = EventWriter("kafka:9092", "events", 2.0, producer_factory=broker.factory, max_queued=10)
    try:
        broker.up = False
        waiting = threading.Thread(target=w.send, args=(records(8),), daemon=True)  # acked once the broker is back
        waiting.start()
        assert wait_until(lambda: len(broker.producers[0]) == 8)
        with pytest.raises(KafkaUnavailable):
            w.send(records(5, "more"))
        assert len(broker.producers[0]) == 8
    finally:
        broker.up = True
        waiting.join(2)
        w.close(0.1)
