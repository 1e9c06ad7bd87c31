"""Kafka as the bench sees it: produce a backlog fast, read end offsets and a group's commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from questlog.kafka_admin import ensure_topics
from questlog.settings import Settings

Kafka = str | Mapping[str, str]  # a bootstrap address, or Settings.kafka_client()


def client(kafka: Kafka) -> dict[str, Any]:
    return {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)


def python_client_auth(settings: Settings | None = None) -> dict[str, Any]:
    """kafka-python's and aiokafka's keyword arguments for the user of ``settings`` (the
    environment's: the bench runs baselines as the admin)."""
    settings = settings or Settings.from_env()
    if not settings.kafka_sasl:
        return {}
    return {
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": settings.kafka_sasl_mechanism,
        "sasl_plain_username": settings.kafka_user,
        "sasl_plain_password": settings.kafka_password(),
    }


def admin_env(settings: Settings) -> dict[str, str]:
    """The environment that makes a baseline's Settings.from_env() the bench stack's admin: the
    user and where its password is (never the password itself)."""
    return {
        "QUESTLOG_KAFKA_SASL_MECHANISM": settings.kafka_sasl_mechanism,
        "QUESTLOG_KAFKA_USER": settings.kafka_user,
        "QUESTLOG_KAFKA_PASSWORD_FILE": str(settings.kafka_password_path),
    }


def produce(bootstrap: Kafka, records: Iterable[tuple]) -> int:
    """Produce (topic, key, value) records, or (topic, key, value, partition), idempotent and
    acks=all like the collector; returns how many Kafka confirmed."""
    producer = Producer(
        {
            **client(bootstrap),
            "enable.idempotence": True,
            "linger.ms": 20,
            "batch.size": 1_000_000,
            "queue.buffering.max.messages": 1_000_000,
        }
    )
    failed = []

    def on_delivery(err, msg):
        if err is not None:
            failed.append(err)

    n = 0
    for topic, key, value, *where in records:
        extra = {"partition": where[0]} if where else {}
        while True:
            try:
                producer.produce(topic, value, key=key, on_delivery=on_delivery, **extra)
                break
            except BufferError:
                producer.poll(0.05)
        n += 1
        if n % 10000 == 0:
            producer.poll(0)
    left = producer.flush(60)
    if left or failed:
        raise RuntimeError(f"Kafka did not take {left + len(failed)} of {n} bench records: {failed[:3]}")
    return n


def create_topics(bootstrap: Kafka, topics: list[str], partitions: int) -> None:
    ensure_topics(bootstrap, topics, partitions)


class Offsets:
    """End offsets of topics and committed offsets of consumer groups, summed over partitions."""

    def __init__(self, bootstrap: Kafka) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient(client(bootstrap))
        self.consumer = Consumer(
            {**client(bootstrap), "group.id": f"bench-offsets-{uuid.uuid4()}", "enable.auto.commit": False}
        )
        self._partitions: dict[str, list[int]] = {}

    def close(self) -> None:
        self.consumer.close()

    def partitions(self, topic: str) -> list[int]:
        if topic not in self._partitions:
            meta = self.consumer.list_topics(topic, timeout=10).topics[topic]
            if meta.error is not None or not meta.partitions:
                return []
            self._partitions[topic] = sorted(meta.partitions)
        return self._partitions[topic]

    def end(self, topic: str) -> dict[int, int]:
        return {
            p: self.consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1]
            for p in self.partitions(topic)
        }

    def end_total(self, topics: Iterable[str]) -> int:
        return sum(sum(self.end(t).values()) for t in topics)

    def committed(self, group: str, topic: str) -> dict[int, int]:
        request = [ConsumerGroupTopicPartitions(group, [TopicPartition(topic, p) for p in self.partitions(topic)])]
        result = self.admin.list_consumer_group_offsets(request)[group].result(timeout=10)
        return {tp.partition: max(tp.offset, 0) for tp in result.topic_partitions}

    def committed_total(self, group: str, topic: str) -> int:
        return sum(self.committed(group, topic).values())

    def lag(self, group: str, topic: str) -> int:
        end, done = self.end(topic), self.committed(group, topic)
        return sum(max(0, end[p] - done.get(p, 0)) for p in end)
