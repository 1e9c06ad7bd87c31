"""The Faust app and its one agent.

Run: `faust -A faust_app.app worker -l info` (settings from QUESTLOG_* environment variables).

The agent reads raw events, asks `routing.route` where each goes and waits until Kafka confirms
the write before taking the next one, so a raw event is acknowledged (and its offset committed)
only once its typed or dead-letter copy is stored.
"""

from __future__ import annotations

import logging
from pathlib import Path

import faust

from faust_app.routing import Source, route
from questlog.catalog import Catalog, load_catalog
from questlog.settings import Settings

log = logging.getLogger(__name__)


def build_router(settings: Settings, catalog: Catalog) -> faust.App:
    """Build the app, its topics and agent. Connects to nothing until a worker starts."""
    app = faust.App(
        settings.router_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        datadir=str(Path(settings.home) / "faust"),
        web_host=settings.router_web_host,
        web_bind=settings.router_web_host,  # web_host only names it in URLs; the default bind is 0.0.0.0
        web_port=settings.router_web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
        producer_acks=-1,
        consumer_auto_offset_reset="earliest",
        broker_commit_every=100,
        broker_commit_interval=1.0,
    )
    raw_topic = app.topic(settings.raw_topic, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    outputs = {
        name: app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw", value_serializer="raw",
                        partitions=settings.topic_partitions)
        for name in [settings.topic_for(et.name) for et in catalog] + [settings.dlq_topic]
    }

    @app.task
    async def create_topics() -> None:
        """The router creates every topic it writes (typed topics and the dead-letter topic)."""
        for topic in outputs.values():
            await topic.maybe_declare()
        log.info("output topics ready: %s", ", ".join(sorted(outputs)))

    @app.agent(raw_topic)
    async def route_events(stream):
        async for event in stream.events():
            message = event.message
            routed = route(message.value, Source(message.topic, message.partition, message.offset),
                           catalog, settings.raw_topic, settings.dlq_topic)
            if routed.dead:
                log.warning("dead letter from %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, routed.reason)
            fut = await outputs[routed.topic].send(key=routed.key, value=routed.value)
            await fut  # delivered: only now may this raw event be acknowledged
            yield routed.topic

    app.route_events = route_events  # for tests: `app.route_events.test_context()`
    return app


app = build_router(Settings.from_env(), load_catalog())
