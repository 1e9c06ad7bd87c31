"""The router's Faust topics, derived from the settings and the catalog: the raw topic its agent
reads, one typed topic per event type, the dead letters. Declared once here and passed around."""

from __future__ import annotations

from typing import Any

import faust

from questlog.kafka_admin import durability_config, min_insync_for, replication_for, retention_config
from questlog.settings import Settings

# Records are bytes in and bytes out: the router parses and writes JSON itself (faust_app.routing).
RAW_BYTES: dict[str, Any] = dict(key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw")


class Topics:
    def __init__(self, app: faust.App, settings: Settings) -> None:
        self.app = app
        self.settings = settings
        self.raw = app.topic(settings.raw_topic, **RAW_BYTES)
        # the router's player activity for agent ``sessions`` (faust_app.sessions): made by Faust as
        # the worker starts, co-partitioned with the sessions table's changelog
        self.activity = app.topic(
            settings.activity_topic, partitions=settings.topic_partitions, internal=True, **RAW_BYTES
        )
        self._out: dict[str, faust.TopicT] = {}

    def out(self, name: str) -> faust.TopicT:
        """The Faust topic a routed record goes to (``events.<type>`` or the dead letters), made on
        first use: a type deployed while the worker runs gets its topic then."""
        topic = self._out.get(name)
        if topic is None:
            topic = self._out[name] = self.app.topic(name, partitions=self.settings.topic_partitions, **RAW_BYTES)
        return topic

    async def ensure(self, name: str) -> None:
        """Make sure topic ``name`` exists: asked of the cluster's metadata first (the router's
        user may describe the typed topics, not create them: Kafka refuses a creation it may not
        make even of a topic that exists), else created through Faust's producer with the
        pipeline's copies and durability configs (as `questlog.kafka_admin.ensure_topics` makes
        them); raises what Kafka answered if it refuses (TopicAuthorizationFailedError without the
        right, or InvalidTopicError for a name it cannot take), ReplicationError for more copies
        than brokers up."""
        topic = self.out(name)
        producer: Any = await self.app.maybe_start_producer()  # Faust's aiokafka driver's
        metadata = await producer._ensure_producer().client.fetch_all_metadata()
        if name in metadata.topics():
            return
        if topic.replicas is None:
            copies = replication_for(self.settings.topic_replication, len(metadata.brokers()))
            insync = min_insync_for(self.settings.min_insync_replicas, copies)
            topic.replicas = copies
            topic.config = {**(topic.config or {}), **retention_config(self.settings), **durability_config(insync)}
        await topic.maybe_declare()
