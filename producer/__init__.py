"""The Flask collector: HTTP in, raw events on Kafka's `events` topic.

Run it as `make run` does (ops.stack.services.collector):
`granian --interface wsgi --workers 2 --blocking-threads 72 --http1-header-read-timeout 10000 --host 127.0.0.1 --port 5000 'producer:create_app()'`
(`--factory`); `gunicorn 'producer:create_app()'` serves it too.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

import orjson
from flask import Flask, Response
from flask.json.provider import DefaultJSONProvider
from werkzeug.sansio.response import Response as BaseResponse

from producer.extension import EventWriters, WriterFactory, kafka_writer
from questlog.catalog.watch import CatalogSource
from questlog.settings import Settings


class OrjsonProvider(DefaultJSONProvider):
    """jsonify() with orjson: the answer to a batch of 100 lists its 100 event_ids, 5x faster
    than the standard library writes them."""

    def response(self, *args: Any, **kwargs: Any) -> BaseResponse:
        try:
            body = orjson.dumps(self._prepare_response_obj(args, kwargs), option=orjson.OPT_APPEND_NEWLINE)
        except orjson.JSONEncodeError:  # what orjson refuses (a lone surrogate in a reason): as Flask does
            return super().response(*args, **kwargs)
        response_class: type[Response] = self._app.response_class  # type: ignore[assignment]
        return response_class(body, mimetype=self.mimetype)


def create_app(test_config: Mapping[str, Any] | None = None, writer_factory: WriterFactory = kafka_writer) -> Flask:
    """Application factory. ``test_config`` may hold ``SETTINGS`` and ``CATALOG`` (a Catalog, or
    a source with ``get()``); ``writer_factory`` builds each worker's event writer from the
    settings (anything with ``send(records)``, ``available`` and ``state``), to swap Kafka out in
    unit tests."""
    from producer.auth import WriteKeys

    app = Flask(__name__)
    settings = Settings.from_env()
    app.config.from_mapping(SETTINGS=settings, CATALOG=None)
    if test_config:
        app.config.from_mapping(test_config)
    settings = app.config["SETTINGS"]
    if app.config["CATALOG"] is None:  # the deployed catalog, reloaded when it changes
        app.config["CATALOG"] = CatalogSource(settings.catalog)
    # The key file, reloaded when it changes; None: keys are off, every source is `default`.
    app.config["WRITE_KEYS"] = WriteKeys(settings.write_keys) if settings.write_keys else None
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from producer import routes

    EventWriters(app, writer_factory)
    app.json = OrjsonProvider(app)
    # No rule here redirects to another with defaults (the catalog's routes and the catch-all share
    # an endpoint); werkzeug would otherwise look for one on every request.
    app.url_map.redirect_defaults = False
    app.register_blueprint(routes.bp)
    # The catalog's routes as plain rules, matched without the catch-all's regex; a type deployed
    # later is served by the catch-all.
    catalog = app.config["CATALOG"]
    for route in (catalog if hasattr(catalog, "routes") else catalog.get()).routes:
        if route != "/":
            app.add_url_rule(route, "collector.seed_route", defaults={"path": route[1:]}, methods=["GET"])
    return app
