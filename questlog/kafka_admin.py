"""Topic creation shared by the stack runner, the router's tests and the sink."""

from __future__ import annotations

import logging
from typing import Iterable

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, NewTopic

log = logging.getLogger(__name__)


def ensure_topics(bootstrap: str, topics: Iterable[str], partitions: int = 1, timeout_s: float = 30.0) -> None:
    """Create the topics that do not exist yet; existing ones are left as they are."""
    admin = AdminClient({"bootstrap.servers": bootstrap})
    existing = set(admin.list_topics(timeout=timeout_s).topics)
    wanted = [NewTopic(t, num_partitions=partitions, replication_factor=1)
              for t in dict.fromkeys(topics) if t not in existing]
    if not wanted:
        return
    for topic, future in admin.create_topics(wanted, request_timeout=timeout_s).items():
        try:
            future.result()
            log.info("created topic %s", topic)
        except KafkaException as exc:
            if exc.args[0].name() != "TOPIC_ALREADY_EXISTS":
                raise
