"""Bringing the whole pipeline up and down: `questlog run`, `questlog stop`, the test fixture."""

from __future__ import annotations

import json
import logging
import sys
import time
from collections.abc import Callable

from ops.stack import artifacts, services, specs
from ops.stack.logecho import LogEcho
from ops.stack.process import Service, ServiceError, Supervisor, rotate_logs
from questlog.catalog.watch import CatalogSource
from questlog.kafka_admin import ensure_pipeline_topics, min_insync_for, replication_for
from questlog.settings import Settings

log = logging.getLogger(__name__)


def say(message: str) -> None:
    print(f"questlog: {message}", file=sys.stderr, flush=True)


class Watchdog:
    """Keeps every service of a run alive, each the same way.

    A service that dies is started again after a backoff (1 s, doubling up to BACKOFF_CAP_S); a
    failed restart counts as another death. Once a service has been healthy for HEALTHY_RESET_S,
    its backoff starts from the beginning again, so a rare death in a long run never adds up to
    a stop. A service waits for the services it needs (DEPENDS) to be healthy before it is
    started again. Nothing here stops the stack: only the user does (or `up()` when a service
    cannot start at all). Restarts run side by side: a dead Kafka does not hold up the sink.
    """

    BACKOFF_FIRST_S = 1.0
    BACKOFF_CAP_S = 60.0
    HEALTHY_RESET_S = 60.0
    DEPENDS: dict[str, tuple[str, ...]] = specs.DEPENDS  # ops/stack/specs.py: each service's `needs`

    ROTATE_EVERY_S = 10.0  # how often the services' logs are looked at (rotate_logs)

    def __init__(self, supervisor: Supervisor, services: list[Service], max_log_bytes: int = 64 * 2**20) -> None:
        self.supervisor = supervisor
        self.max_log_bytes = max_log_bytes
        self.rotate_at = 0.0
        self.services = {svc.name: svc for svc in services}
        now = time.monotonic()
        self.state = {name: "up" for name in self.services}  # up | waiting | starting
        self.since = {name: now for name in self.services}  # when the current state began
        self.deaths = {name: 0 for name in self.services}  # since it was last healthy for long
        self.retry_at: dict[str, float] = {}
        self.restarts: dict[str, int] = {name: 0 for name in self.services}
        self._save_restarts()

    def _save_restarts(self) -> None:
        """Write the restart counts to ``run/watchdog.json``, where `questlog status` reads them
        (written whole to a temporary file, then renamed: a reader never sees half of it)."""
        path = self.supervisor.run_dir / "watchdog.json"
        try:
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_suffix(".tmp")
            tmp.write_text(json.dumps({"restarts": self.restarts, "updated": time.time()}))
            tmp.replace(path)
        except OSError as exc:  # status loses a figure; the watchdog keeps watching
            log.warning("could not write %s: %s", path, exc)

    def backoff(self, name: str) -> float:
        return min(self.BACKOFF_CAP_S, self.BACKOFF_FIRST_S * 2 ** max(self.deaths[name] - 1, 0))

    def _died(self, name: str, why: str) -> None:
        self.deaths[name] += 1
        wait = self.backoff(name)
        self.state[name], self.since[name] = "waiting", time.monotonic()
        self.retry_at[name] = time.monotonic() + wait
        say(f"{name} {why}; restarting it in {wait:.0f}s (log: {self.supervisor.log_path(name)})")

    def _dependencies_ready(self, name: str) -> bool:
        """Whether every service ``name`` needs is up and passes its health check now: a NameNode
        that came back is up but in safe mode until the DataNode reports, and a sink started then
        would only fail again and back off further."""
        for dep in self.DEPENDS.get(name, ()):
            if dep not in self.services:
                continue
            if self.state[dep] != "up":
                return False
            try:
                if not self.services[dep].health():
                    return False
            except Exception:
                return False
        return True

    def check(self) -> None:
        """One round: notice deaths, advance restarts, reset the backoff of long-healthy services,
        and (every ROTATE_EVERY_S) keep each service's log within its size bound."""
        now = time.monotonic()
        if now >= self.rotate_at:
            self.rotate_at = now + self.ROTATE_EVERY_S
            rotate_logs(self.supervisor.log_dir, self.max_log_bytes)
        for name, code in self.supervisor.exited():
            if name in self.services and self.state[name] in ("up", "starting"):
                self._died(name, f"exited unexpectedly (code {code})")
        for name, svc in self.services.items():
            state = self.state[name]
            if state == "up" and self.deaths[name] and now - self.since[name] >= self.HEALTHY_RESET_S:
                self.deaths[name] = 0
            elif state == "waiting" and now >= self.retry_at[name]:
                if not self._dependencies_ready(name):
                    continue  # started once what it needs is back (no death counted meanwhile)
                self.supervisor.stop(name)  # what is left of its process group
                try:
                    self.supervisor.start(svc)
                except ServiceError as exc:
                    self._died(name, f"could not be started: {exc}")
                    continue
                self.restarts[name] += 1
                self._save_restarts()
                self.state[name], self.since[name] = "starting", now
            elif state == "starting":
                try:
                    healthy = svc.health()
                except Exception:  # the probe failing is the normal state while starting
                    healthy = False
                if healthy:
                    self.state[name], self.since[name] = "up", now
                    say(f"{name} is up again (restart {self.restarts[name]})")
                elif now - self.since[name] > svc.start_timeout_s:
                    self.supervisor.stop(name)
                    self._died(name, f"did not become healthy within {svc.start_timeout_s:.0f}s")


class Pipeline:
    """The local stack (Kafka, HDFS, PostgreSQL, Trino) and, with ``apps``, the collector, router,
    sink and compactor."""

    def __init__(self, settings: Settings, apps: bool = True, echo_logs: bool = False) -> None:
        self.settings = settings
        self.apps = apps
        self.supervisor = Supervisor(settings.home_path)
        self.started: list[Service] = []
        self.echo_logs = echo_logs  # the services' warnings on stderr (ops.stack.logecho), for `questlog run`
        self.echo: LogEcho | None = None

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
        self.started += svcs

    def up(self) -> None:
        started = time.monotonic()
        # copies the local brokers cannot give: said now, not once Kafka, HDFS and Trino are up
        copies = replication_for(self.settings.topic_replication, services.LOCAL_KAFKA_BROKERS)
        min_insync_for(self.settings.min_insync_replicas, copies)
        _stop_marker(self.settings).unlink(missing_ok=True)
        self.fetch()
        self.started = []
        if self.echo_logs:
            self.echo = LogEcho(self.supervisor.log_dir, services.STOP_ORDER)
            self.echo.start()
        try:
            for wave in services.waves("stack", self.settings):
                self._start(wave)
            # The catalog the stages will run on: a malformed or incompatible deployed file is
            # refused for the last one accepted here, as each stage refuses it, not a reason to stop.
            ensure_pipeline_topics(self.settings, CatalogSource(self.settings.catalog, home=self.settings.home).get())
            if self.apps:
                for wave in services.waves("pipeline", self.settings):
                    self._start(wave)
        except BaseException:
            self.down()
            raise
        say(f"all up in {time.monotonic() - started:.1f}s")
        if self.apps:  # `questlog status`'s slow figures, asked once in the background for its first call
            from ops.status import spawn_refresh

            spawn_refresh(self.settings)

    def down(self) -> None:
        if self.echo is not None:  # what services say while being stopped is not news
            self.echo.stop()
            self.echo = None
        stop_all(self.settings, self.supervisor)

    def watch(self, stop_requested: Callable[[], bool], interval_s: float = 0.5) -> int:
        """Keep every service alive (see Watchdog) until asked to stop, here or by `questlog
        stop` elsewhere; then 0."""
        dog = Watchdog(self.supervisor, self.started, self.settings.log_max_bytes)
        while not stop_requested():
            if _stop_marker(self.settings).exists():
                return 0
            dog.check()
            time.sleep(interval_s)
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
