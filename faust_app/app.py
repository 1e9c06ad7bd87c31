"""The Faust app and its one agent.

Run: `faust -A faust_app.app worker -l info` (settings from QUESTLOG_* environment variables).

The agent reads raw events, asks `routing.route` where each goes and waits until Kafka confirms
the write before taking the next one, so a raw event is acknowledged (and its offset committed)
only once its typed or dead-letter copy is stored. The catalog is the deployed one, reloaded when
it changes; a newly deployed type gets its topic created on first use.
"""

from __future__ import annotations

import logging
import os
from pathlib import Path

import faust

from faust_app.routing import Source, route
from questlog.catalog import Catalog
from questlog.catalog.watch import CatalogSource
from questlog.settings import Settings

log = logging.getLogger(__name__)


def crash(reason: str) -> None:
    log.critical("router stopping without acknowledging the current event: %s", reason)
    logging.shutdown()
    os._exit(70)


def build_router(settings: Settings, catalog: Catalog | CatalogSource) -> faust.App:
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
        # A crashed router's partitions go to its replacement after this long (Faust's default is
        # 60 s, during which nothing is routed).
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
    )
    current = catalog.get if isinstance(catalog, CatalogSource) else (lambda: catalog)
    refresh = catalog.refresh if isinstance(catalog, CatalogSource) else (lambda: catalog)
    raw_topic = app.topic(settings.raw_topic, key_type=bytes, value_type=bytes,
                          key_serializer="raw", value_serializer="raw")
    outputs: dict[str, faust.TopicT] = {}

    async def output(name: str) -> faust.TopicT:
        """The topic named ``name``, declared (created if missing) the first time it is used."""
        topic = outputs.get(name)
        if topic is None:
            topic = app.topic(name, key_type=bytes, value_type=bytes, key_serializer="raw",
                              value_serializer="raw", partitions=settings.topic_partitions)
            await topic.maybe_declare()
            outputs[name] = topic
        return topic

    @app.task
    async def create_topics() -> None:
        """The router creates every topic it writes (typed topics and the dead-letter topic)."""
        for name in [settings.topic_for(et.name) for et in current()] + [settings.dlq_topic]:
            await output(name)
        log.info("output topics ready: %s", ", ".join(sorted(outputs)))

    @app.agent(raw_topic)
    async def route_events(stream):
        async for event in stream.events():
            message = event.message
            source = Source(message.topic, message.partition, message.offset)
            used = current()
            routed = route(message.value, source, used, settings.raw_topic, settings.dlq_topic)
            if routed.dead and refresh() is not used:
                # The collector may know a just-deployed type or field before our cached catalog.
                routed = route(message.value, source, current(), settings.raw_topic, settings.dlq_topic)
            if routed.dead:
                log.warning("dead letter from %s[%d]@%d: %s", message.topic, message.partition,
                            message.offset, routed.reason)
            try:
                fut = await (await output(routed.topic)).send(key=routed.key, value=routed.value)
                await fut  # delivered: only now may this raw event be acknowledged
            except Exception as exc:
                # Faust would acknowledge the event after an agent error: stop instead, so that
                # its offset is not committed and it is routed again after the restart.
                crash(f"could not write {message.topic}[{message.partition}]@{message.offset} "
                      f"to {routed.topic}: {exc!r}")
            yield routed.topic

    app.route_events = route_events  # for tests: `app.route_events.test_context()`
    return app


_settings = Settings.from_env()
app = build_router(_settings, CatalogSource(_settings.catalog))
