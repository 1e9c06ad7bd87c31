"""The collector's Kafka writer as a Flask extension (flaskr's `get_db()` shape).

Nothing connects at import or app creation: each worker process builds its EventWriter on its
first request (after the server forked it), keeps it in ``app.extensions``, never in
``app.config``, and closes it when the worker exits (delivering what is queued first). Tests
pass ``writer_factory`` to ``create_app`` to swap Kafka out.
"""

from __future__ import annotations

import atexit
import multiprocessing.util
import os
import threading
from collections.abc import Callable
from typing import Any

from flask import Flask, current_app

from producer.writer import EventWriter
from questlog.settings import Settings

EXTENSION = "questlog.event_writer"

WriterFactory = Callable[[Settings], Any]


def kafka_writer(settings: Settings) -> EventWriter:
    """The worker's writer, as this process's Kafka user (the local stack's `questlog-collector`,
    which may write the raw topic and nothing else)."""
    return EventWriter(settings.kafka_client(), settings.raw_topic, settings.produce_timeout_s)


class EventWriters:
    """One writer per worker process, made on first use."""

    def __init__(self, app: Flask | None = None, factory: WriterFactory = kafka_writer) -> None:
        self.factory = factory
        self._lock = threading.Lock()
        self._writer: Any = None
        self._pid: int | None = None
        if app is not None:
            self.init_app(app)

    def init_app(self, app: Flask) -> None:
        app.extensions[EXTENSION] = self

    def get(self, settings: Settings) -> Any:
        writer = self._writer
        if writer is not None and self._pid == os.getpid():
            return writer
        with self._lock:
            if self._writer is None or self._pid != os.getpid():  # a fork inherits no live producer
                self._writer = self.factory(settings)
                self._pid = os.getpid()
                # gunicorn's workers run atexit handlers; granian's do not, but run
                # multiprocessing's finalizers. close() runs once whichever comes first.
                atexit.register(self.close)
                multiprocessing.util.Finalize(None, self.close, exitpriority=10)
            return self._writer

    def close(self) -> None:
        writer, self._writer = self._writer, None
        if writer is not None and self._pid == os.getpid() and hasattr(writer, "close"):
            writer.close()


def get_writer() -> Any:
    app = current_app
    return app.extensions[EXTENSION].get(app.config["SETTINGS"])
