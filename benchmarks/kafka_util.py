"""Kafka as the bench sees it: produce a backlog fast, read end offsets and a group's commits."""

from __future__ import annotations

import uuid
from collections.abc import Iterable

from confluent_kafka import Consumer, ConsumerGroupTopicPartitions, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from questlog.kafka_admin import ensure_topics


def produce(bootstrap: str, records: Iterable[tuple]) -> int:
    """Produce (topic, key, value) records, or (topic, key, value, partition), idempotent and
    acks=all like the collector; returns how many Kafka confirmed."""
    producer = Producer(
        {
            "bootstrap.servers": bootstrap,
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


def create_topics(bootstrap: str, topics: list[str], partitions: int) -> None:
    ensure_topics(bootstrap, topics, partitions)


class Offsets:
    """End offsets of topics and committed offsets of consumer groups, summed over partitions."""

    def __init__(self, bootstrap: str) -> None:
        self.bootstrap = bootstrap
        self.admin = AdminClient({"bootstrap.servers": bootstrap})
        self.consumer = Consumer(
            {"bootstrap.servers": bootstrap, "group.id": f"bench-offsets-{uuid.uuid4()}", "enable.auto.commit": False}
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
