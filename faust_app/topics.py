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
        client = producer._ensure_producer().client
        if name in client.cluster.topics():
            return
        metadata = await client.fetch_all_metadata()
        if name not in metadata.topics():
            if topic.replicas is None:
                copies = replication_for(self.settings.topic_replication, len(metadata.brokers()))
                insync = min_insync_for(self.settings.min_insync_replicas, copies)
                topic.replicas = copies
                config = {**retention_config(self.settings), **durability_config(insync)}
                topic.config = {**(topic.config or {}), **config}
            await topic.maybe_declare()
        # Into the producer's own metadata too, by a refresh of every topic (what it tracks while
        # its list is empty). Otherwise aiokafka's first send adds this one topic to its list and
        # every refresh from then on asks for it alone: the other topics drop out of the metadata,
        # and Faust's key_partition of the sessions table's changelog (which does not wait for
        # metadata) fails on None and stops the worker. A topic the admin made before the router
        # saw it (`questlog catalog deploy`) came this way.
        await client.set_topics(())
