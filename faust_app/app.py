"""The Faust app: agent ``route`` reads the raw topic and writes each event to its typed topic or
to the dead letters; agent ``sessions`` (faust_app.session_agent, QUESTLOG_SESSIONS=1) keeps each
player's open sessions in a Faust table and writes each closed session to ``events.sessions``.

Run: `faust -A faust_app.app worker -l info` (settings from QUESTLOG_* environment variables).
Run N of them (each with its own QUESTLOG_ROUTER_WEB_PORT, or `--web-port`) to share the raw
topic's partitions: they form the consumer group QUESTLOG_ROUTER_ID, and Faust assigns them the
partitions (QUESTLOG_TOPIC_PARTITIONS).

Everything goes through Faust: its consumer reads the raw topic, agent ``route``
(faust_app.agents) takes batches, ``faust_app.router.Router`` routes them with the pure functions of
``faust_app.routing`` and writes every copy with Faust's producer (idempotent, acks=all, Kafka's
murmur2 partitioner) to the Faust topics of ``faust_app.topics``; the agent acks a raw record only
after Kafka confirmed its copies, and Faust commits what was acked. The catalog is the deployed
one, reloaded when it changes; a newly deployed type gets its topic created on first use.

Faust's web server (QUESTLOG_ROUTER_WEB_HOST:QUESTLOG_ROUTER_WEB_PORT) serves GET /metrics in
Prometheus' format: the counters of faust_app.router.
"""

from __future__ import annotations

import gc
import time
from pathlib import Path

import faust
from faust.sensors import Monitor
from faust.transport.drivers import aiokafka as faust_kafka

from faust_app.agents import add_route_agent
from faust_app.router import Router
from faust_app.session_agent import WITHOUT_PLAYER, add_sessions_agent, deliver
from faust_app.sessions import ActivityFeed
from faust_app.topics import Topics
from questlog.catalog.watch import CatalogSource
from questlog.privacy import Suppressions
from questlog.settings import Settings


class LeanMonitor(Monitor):
    """Faust's Monitor keeps statistics on every message and event (10-30% of the stream's time
    here); the router has its own metrics. Kept: the inbound time per partition, which Faust's
    stalled-stream check reads."""

    def on_message_in(self, tp, offset, message) -> None:
        message.time_in = None

    def on_stream_event_in(self, tp, offset, stream, event):
        self.stream_inbound_time[tp] = time.monotonic()
        return None

    def on_stream_event_out(self, tp, offset, stream, event, state=None) -> None:
        pass

    def on_message_out(self, tp, offset, message) -> None:
        pass

    def on_send_initiated(self, producer, topic, message, keysize, valsize):
        return None

    def on_send_completed(self, producer, state, metadata) -> None:
        pass


# Python's cyclic garbage collector, as the worker runs: a collection of the youngest objects after
# 20,000 allocations instead of 700 (routing allocates a few containers per event, orjson's dicts
# among them, almost all freed by reference counting), and the objects of the start (Faust's,
# aiokafka's, the catalog's) moved out of every collection (``gc.freeze``). Seconds spent collecting
# in a router draining the bench's router backlogs (2026-12-07, one worker, sessions off, two runs
# each, the machine shared with a test suite): client batches 5.10 and 4.75 s with Python's
# defaults, 1.22 and 1.13 s with these; single-event GET records 1.48 and 1.90 s, 0.09 and 0.06 s.
GC_THRESHOLDS = (20_000, 20, 50)


def tune_gc() -> None:
    """Collect, freeze what is left and collect less often (GC_THRESHOLDS): once, as the agent
    starts."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


class IdempotentProducer(faust_kafka.Producer):
    """Faust's producer with Kafka's idempotence on (no duplicate or reordered copy after a retry
    of a produce request); Faust turns it on only for its transactions."""

    def _settings_extra(self):
        return {**super()._settings_extra(), "enable_idempotence": True}


class PasswordFileCredentials(faust.SASLCredentials):
    """SASL credentials whose password is read from its file when Faust connects (building the
    app reads nothing)."""

    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        super().__init__(username=settings.kafka_user, mechanism=settings.kafka_sasl_mechanism)

    @property
    def password(self) -> str:
        return self._settings.kafka_password()

    @password.setter
    def password(self, value: str | None) -> None:  # SASLCredentials.__init__ sets None: the file decides
        pass


class RouterApp(faust.App):
    routing: Router | None = None  # the agent's, once it runs (for the lag timer and tests)

    def _new_producer(self):
        return IdempotentProducer(self.transport, loop=self.loop, beacon=self.beacon)


def build_router(settings: Settings, catalog: CatalogSource) -> RouterApp:
    """Build the app, its topics and its agent. Connects to nothing until a worker starts."""
    app = RouterApp(
        settings.router_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        # the router's own Kafka user (the local stack's `questlog-router`: it may read the raw
        # topic and write the typed ones, not create them), its password read from its file
        broker_credentials=PasswordFileCredentials(settings) if settings.kafka_sasl else None,
        datadir=str(Path(settings.home) / f"faust-{settings.router_web_port}"),
        web_host=settings.router_web_host,
        web_bind=settings.router_web_host,  # web_host only names it in URLs; the default bind is 0.0.0.0
        web_port=settings.router_web_port,
        topic_partitions=settings.topic_partitions,
        # the copies of the topics Faust makes itself; the stack and the sink make them all first
        # (questlog.kafka_admin.ensure_pipeline_topics), as many as the brokers up allow, and the
        # agent's typed topics get theirs from faust_app.topics
        topic_replication_factor=settings.topic_replication or 1,
        store="memory://",
        Monitor=LeanMonitor,
        # A crashed worker's partitions go to another worker after this long.
        broker_session_timeout=10.0,
        broker_heartbeat_interval=3.0,
        # What a killed worker had acked but not committed is routed again by the next owner (the sink
        # drops the copies): committing every second, not every 2.8 s, keeps that small.
        broker_commit_interval=1.0,
        consumer_auto_offset_reset="earliest",
        # Memory (faust_app.router): Faust's default fetch (1 MiB a partition) and a buffer of 1,024
        # raw records, not 4,096: records are whole requests, up to QUESTLOG_MAX_BODY_BYTES each.
        consumer_max_fetch_size=1024 * 1024,
        stream_buffer_maxsize=1024,
        producer_acks=-1,
        producer_linger=0.005,
        # a batch holds at most one record limit; a request may carry a little more (1 MiB for the
        # default limit), as the broker's message.max.bytes (1,048,588) allows
        producer_max_batch_size=settings.max_record_bytes,
        producer_max_request_size=settings.max_record_bytes + 48_576,
    )
    topics = Topics(app, settings)
    suppressions = Suppressions(settings)  # read at once: nothing is routed before it is known

    def make_router() -> Router:
        tune_gc()
        producer = app.producer

        async def send(topic: str, key: bytes | None, value: bytes):
            return await producer.send(topic, key, value, None, None, None)

        def highwater() -> dict:
            consumer = app.consumer
            return {tp: consumer.highwater(tp) for tp in consumer.assignment() if tp.topic == settings.raw_topic}

        feed = ActivityFeed(settings.topic_partitions) if settings.sessions else None
        counted = 0

        async def send_activity(records: list[tuple[int, bytes]]) -> None:
            nonlocal counted
            assert feed is not None
            WITHOUT_PLAYER.inc(feed.without_player - counted)
            counted = feed.without_player
            await deliver(producer, settings.activity_topic, [(p, None, value) for p, value in records])

        router = Router(
            settings, catalog.get, catalog.refresh, send, topics.ensure, highwater, feed, send_activity, suppressions
        )
        app.routing = router
        return router

    add_route_agent(app, topics, make_router)
    if settings.sessions:
        add_sessions_agent(app, topics, settings, suppressions)

    @app.timer(interval=2.0)
    async def lag() -> None:
        """The lag gauges between batches too (they are set as each batch begins)."""
        if app.routing is not None:
            app.routing.observe_lag()

    @app.page("/metrics")
    async def metrics(web, request):
        """Prometheus: routed events by type, dead letters by reason class, batch latency, lag."""
        import prometheus_client

        return web.bytes(
            prometheus_client.generate_latest(), headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    return app


_settings = Settings.from_env()
app = build_router(_settings, CatalogSource(_settings.catalog))
