"""Where the bench runs: its own home and ports, and the processes it starts beside the pipeline."""

from __future__ import annotations

import json
import shutil
import time
import urllib.request
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from ops.stack.process import Service, Supervisor, port_open
from questlog.settings import REPO_ROOT, Settings, harness_variable

# Beside `make run` (the defaults) and the tests (+10000). Like the tests' QUESTLOG_TEST_*, these two
# let a second bench (another checkout) run on the same machine: its figures then share the CPUs.
BENCH_HOME = Path(harness_variable("QUESTLOG_BENCH_HOME", str(REPO_ROOT / ".questlog-bench")))
PORT_SHIFT = int(harness_variable("QUESTLOG_BENCH_PORT_OFFSET", "20000"))


def bench_settings(home: Path = BENCH_HOME) -> Settings:
    """The local defaults with every port shifted by PORT_SHIFT and state in ``home``."""
    defaults = Settings.from_env({}, cache=Settings.from_env().cache)  # whatever this shell exports
    return defaults.shifted(PORT_SHIFT, home, router_id="questlog-router-bench")


def free_port(start: int, taken: set[int]) -> int:
    """The first port from ``start`` that nothing listens on and this run has not handed out."""
    port = start
    while port in taken or port_open("127.0.0.1", port):
        port += 1
    taken.add(port)
    return port


def http_ok(url: str) -> Callable[[], bool]:
    def probe() -> bool:
        with urllib.request.urlopen(url, timeout=2) as response:
            return response.status == 200

    return probe


def group_ready(bootstrap, group: str, topic: str, members: int = 1) -> Callable[[], bool]:
    """A health check: consumer ``group`` is stable with ``members`` members holding ``topic``."""

    def probe() -> bool:
        from confluent_kafka.admin import AdminClient

        from benchmarks.kafka_util import client

        admin = AdminClient(client(bootstrap))
        desc = admin.describe_consumer_groups([group])[group].result(timeout=5)
        holders = [m for m in desc.members if any(tp.topic == topic for tp in m.assignment.topic_partitions)]
        return desc.state.name == "STABLE" and len(holders) >= members

    return probe


class Processes:
    """Services the bench starts for one case (baselines, extra routers and sinks), each in its own
    process group with a log under ``home``; ``stop_all`` ends them whatever happened."""

    def __init__(self, home: Path, rss=None) -> None:
        self.home = home
        self.supervisor = Supervisor(home)
        self.rss = rss
        self.names: list[str] = []

    def start(self, svc: Service, label: str | None = None, wait: bool = True) -> float:
        self.supervisor.start(svc)
        self.names.append(svc.name)
        if self.rss is not None:
            self.rss.watch(label or svc.name, lambda n=svc.name: self.supervisor.recorded_pid(n))
        return self.supervisor.wait_healthy(svc) if wait else 0.0

    def log(self, name: str) -> Path:
        return self.supervisor.log_path(name)

    def stop(self, name: str) -> None:
        self.supervisor.stop(name, timeout_s=20)
        if name in self.names:
            self.names.remove(name)

    def stop_all(self) -> None:
        for name in reversed(list(self.names)):
            self.stop(name)


def stop_leftovers(root: Path) -> None:
    """Stop what an interrupted earlier bench left running under ``root`` (pid files in */run/)."""
    for pidfile in sorted(root.glob("**/run/*.pid")):
        home = pidfile.parent.parent
        if home == root:
            continue  # the pipeline's own: questlog's stop_all handles it
        Supervisor(home).stop(pidfile.stem, timeout_s=10)


def renamed(svc: Service, name: str) -> Service:
    return replace(svc, name=name)


def wait_until(probe: Callable[[], object], timeout_s: float, interval_s: float = 0.2):
    """``probe()``'s first truthy value, or None after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    while True:
        value = probe()
        if value:
            return value
        if time.monotonic() >= deadline:
            return None
        time.sleep(interval_s)


def fresh_dir(path: Path) -> Path:
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


def read_json_lines(path: Path, marker: str = '{"event"') -> list[dict]:
    """The JSON objects a job printed one a line into its log (whatever else shares the line)."""
    out = []
    for line in path.read_text(errors="replace").splitlines():
        if marker in line:
            try:
                out.append(json.loads(line[line.index(marker) :]))
            except ValueError:
                pass
    return out
