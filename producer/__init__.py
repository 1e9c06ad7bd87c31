"""The Flask collector: HTTP in, raw events on Kafka's `events` topic.

Run it as `make run` does: `gunicorn --bind 127.0.0.1:5000 'producer:create_app()'`.
"""

from __future__ import annotations

import logging
from typing import Any, Mapping

from flask import Flask

from questlog.catalog.watch import CatalogSource
from questlog.settings import Settings


def create_app(test_config: Mapping[str, Any] | None = None) -> Flask:
    """Application factory. ``test_config`` may hold ``SETTINGS``, ``CATALOG`` (a Catalog, or a
    source with ``get()``) and ``EVENT_WRITER`` (anything with ``send(events)``) to swap the real
    ones out in unit tests."""
    app = Flask(__name__)
    settings = Settings.from_env()
    app.config.from_mapping(SETTINGS=settings, CATALOG=None, EVENT_WRITER=None)
    if test_config:
        app.config.from_mapping(test_config)
    settings = app.config["SETTINGS"]
    if app.config["CATALOG"] is None:  # the deployed catalog, reloaded when it changes
        app.config["CATALOG"] = CatalogSource(settings.catalog)
    app.config["MAX_CONTENT_LENGTH"] = settings.max_body_bytes
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")

    from producer import routes

    app.register_blueprint(routes.bp)
    return app
