"""Bringing the whole pipeline up and down: `questlog run`, `questlog stop`, the test fixture."""

from __future__ import annotations

import logging
import sys
import time
from typing import Callable

from questlog.catalog import load_catalog
from questlog.kafka_admin import ensure_topics
from questlog.settings import Settings
from questlog.stack import artifacts, services
from questlog.stack.process import Service, ServiceError, Supervisor

log = logging.getLogger(__name__)


def say(message: str) -> None:
    print(f"questlog: {message}", file=sys.stderr, flush=True)


class Pipeline:
    """The local stack (Kafka, HDFS, Trino) and, with ``apps``, the collector, router and sink."""

    # The pipeline's own processes hold no state of their own (Kafka offsets and Spark's checkpoint
    # do), so one that dies is started again: at most this many times a run, then everything stops.
    MAX_RESTARTS = 5

    def __init__(self, settings: Settings, apps: bool = True) -> None:
        self.settings = settings
        self.apps = apps
        self.supervisor = Supervisor(settings.home_path)
        self.restartable: dict[str, Service] = {}
        self.restarts: dict[str, int] = {}

    def fetch(self) -> None:
        artifacts.fetch_all(self.settings.cache_path)

    def _start(self, svcs: list[Service]) -> None:
        """Start ``svcs`` together, then wait for each to be healthy."""
        for svc in svcs:
            say(f"starting {svc.name} (log: {self.supervisor.log_path(svc.name)})")
            self.supervisor.start(svc)
        for svc in svcs:
            took = self.supervisor.wait_healthy(svc)
            say(f"{svc.name} is up ({took:.1f}s){' at ' + svc.url if svc.url else ''}")

    def up(self) -> None:
        started = time.monotonic()
        _stop_marker(self.settings).unlink(missing_ok=True)
        self.fetch()
        try:
            kafka, namenode, datanode, trino = services.stack(self.settings)
            self._start([kafka, namenode, trino])
            self._start([datanode])
            tables = load_catalog(self.settings.catalog).tables(self.settings.raw_topic, self.settings.dlq_topic)
            topics = [self.settings.raw_topic] + [t.topic for t in tables]
            ensure_topics(self.settings.kafka_bootstrap, topics, self.settings.topic_partitions)
            if self.apps:
                apps = services.pipeline(self.settings)
                self._start(apps)
                self.restartable = {svc.name: svc for svc in apps}
        except BaseException:
            self.down()
            raise
        say(f"all up in {time.monotonic() - started:.1f}s")

    def down(self) -> None:
        stop_all(self.settings, self.supervisor)

    def watch(self, stop_requested: Callable[[], bool]) -> int:
        """Block until asked to stop, here or by `questlog stop` elsewhere (0), or until a service
        of the stack dies, or one of the pipeline dies more than MAX_RESTARTS times (1). A
        pipeline process that dies is restarted: the collector, router and sink resume from
        Kafka's committed offsets and Spark's checkpoint."""
        while not stop_requested():
            if _stop_marker(self.settings).exists():
                return 0
            for name, code in self.supervisor.exited():
                say(f"{name} exited unexpectedly (code {code}); see {self.supervisor.log_path(name)}")
                svc = self.restartable.get(name)
                self.restarts[name] = self.restarts.get(name, 0) + 1
                if svc is None or self.restarts[name] > self.MAX_RESTARTS:
                    return 1
                say(f"restarting {name} ({self.restarts[name]} of {self.MAX_RESTARTS})")
                self.supervisor.stop(name)  # what is left of its process group
                try:
                    self._start([svc])
                except ServiceError as exc:
                    say(str(exc))
                    return 1
            time.sleep(0.5)
        return 0


def _stop_marker(settings: Settings):
    return settings.home_path / "run" / "stop-requested"


def stop_all(settings: Settings, supervisor: Supervisor | None = None) -> list[str]:
    supervisor = supervisor or Supervisor(settings.home_path)
    if supervisor.run_dir.exists():  # tells a watching `questlog run` that this stop is wanted
        _stop_marker(settings).touch()
    stopped = []
    for name in services.STOP_ORDER:
        if supervisor.stop(name):
            say(f"stopped {name}")
            stopped.append(name)
    return stopped
