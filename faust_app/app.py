"""The Faust app: a worker that hosts the router.

Run: `faust -A faust_app.app worker -l info` (settings from QUESTLOG_* environment variables).
Run N of them (each with its own QUESTLOG_ROUTER_WEB_PORT, or `--web-port`) to share the raw
topic's partitions: they form the consumer group QUESTLOG_ROUTER_ID.

The router (`faust_app.router.Router`) reads raw events in batches, asks `routing.route` where
each goes, writes the typed copies and dead letters, and commits a raw event's offset only after
Kafka confirmed its copy. The catalog is the deployed one, reloaded when it changes; a newly
deployed type gets its topic created on first use.

Faust's web server (QUESTLOG_ROUTER_WEB_HOST:QUESTLOG_ROUTER_WEB_PORT) serves GET /metrics in
Prometheus' format: the counters of faust_app.router.
"""

from __future__ import annotations

from pathlib import Path

import faust
from faust.app.base import BootStrategy

from faust_app.router import Router
from questlog.catalog.watch import CatalogSource
from questlog.settings import Settings


class _RouterBoot(BootStrategy):
    # Faust's own consumer and producer stay off: the router reads and writes with its own
    # batch client (see faust_app.router for the measurements), and Faust's consumer would join
    # the same consumer group with another partition assignor, which Kafka refuses.
    enable_kafka = False


class RouterApp(faust.App):
    BootStrategy = _RouterBoot
    router_service: type[Router]  # set by build_router, for tests


def build_router(settings: Settings, catalog: CatalogSource) -> RouterApp:
    """Build the app and its router service. Connects to nothing until a worker starts."""
    app = RouterApp(
        settings.router_id,
        broker=[f"kafka://{hostport}" for hostport in settings.kafka_bootstrap.split(",")],
        datadir=str(Path(settings.home) / f"faust-{settings.router_web_port}"),
        web_host=settings.router_web_host,
        web_bind=settings.router_web_host,  # web_host only names it in URLs; the default bind is 0.0.0.0
        web_port=settings.router_web_port,
        topic_partitions=settings.topic_partitions,
        topic_replication_factor=1,
    )
    current, refresh = catalog.get, catalog.refresh

    @app.service
    class RouterService(Router):
        def __init__(self, **kwargs) -> None:
            super().__init__(settings, current, refresh, settings.max_record_bytes, **kwargs)

    @app.page("/metrics")
    async def metrics(web, request):
        """Prometheus: routed events by type, dead letters by reason class, batch latency, lag."""
        import prometheus_client

        return web.bytes(
            prometheus_client.generate_latest(), headers={"Content-Type": prometheus_client.CONTENT_TYPE_LATEST}
        )

    app.router_service = RouterService  # for tests
    return app


_settings = Settings.from_env()
app = build_router(_settings, CatalogSource(_settings.catalog))
