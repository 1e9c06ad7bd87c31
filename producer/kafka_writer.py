"""The collector's lazily created EventWriter, one per process (Flask's `get_db()` shape):
nothing connects at import or app creation, the producer is built on the first request."""

from __future__ import annotations

import threading

from flask import current_app

from producer.kafka import EventWriter

_lock = threading.Lock()


def get_writer() -> EventWriter:
    app = current_app
    writer = app.config.get("EVENT_WRITER")
    if writer is None:
        with _lock:
            writer = app.config.get("EVENT_WRITER")
            if writer is None:
                settings = app.config["SETTINGS"]
                writer = EventWriter(settings.kafka_bootstrap, settings.raw_topic, settings.produce_timeout_s)
                app.config["EVENT_WRITER"] = writer
    return writer
