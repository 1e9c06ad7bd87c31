"""Resident memory per service: the sum over each service's process group, sampled with psutil.

Every service the bench or the runner starts leads its own process group (gunicorn's workers and
Spark's JVM go with it), so a group's RSS is the service's. Pages shared between a group's
processes (gunicorn's forked workers) count once per process, as `ps` and `top` count them.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Callable

import psutil


def rss_by_group() -> dict[int, int]:
    """Bytes resident per process group, over every live process. A process that leads a group of
    its own under a parent of another group counts with its parent's group: PostgreSQL's backends
    and auxiliary processes each call setsid(), yet they are the postmaster's service."""
    out: dict[int, int] = {}
    for proc in psutil.process_iter(["memory_info", "ppid"]):
        try:
            pgid = os.getpgid(proc.pid)
            ppid = proc.info["ppid"]
            if pgid == proc.pid and ppid and ppid != 1 and os.getpgid(ppid) != pgid and os.getpgid(ppid) == ppid:
                pgid = ppid  # a child that set up a group of its own, of a group leader
        except (ProcessLookupError, PermissionError):
            continue
        memory = proc.info["memory_info"]
        if memory is not None:  # None: gone, or not ours to read
            out[pgid] = out.get(pgid, 0) + memory.rss
    return out


class RssSampler:
    """Samples the groups it watches every ``interval_s`` in a thread; keeps each one's series."""

    def __init__(self, interval_s: float = 1.0) -> None:
        self.interval_s = interval_s
        self.started = time.monotonic()
        self.groups: dict[str, Callable[[], int | None]] = {}
        self.series: dict[str, list[tuple[float, int]]] = {}
        self.phases: list[tuple[str, float, float]] = []  # (case, start, end) in seconds since start
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)
        self._lock = threading.Lock()

    def watch(self, name: str, pgid: Callable[[], int | None]) -> None:
        """Watch the group led by ``pgid()`` (read again at each sample: services restart)."""
        with self._lock:
            self.groups[name] = pgid

    def start(self) -> RssSampler:
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)

    def sample(self) -> None:
        now = time.monotonic() - self.started
        groups = rss_by_group()
        with self._lock:
            watched = list(self.groups.items())
        for name, pgid in watched:
            try:
                leader = pgid()
            except Exception:
                leader = None
            if leader is not None and groups.get(leader):
                self.series.setdefault(name, []).append((now, groups[leader]))

    def _run(self) -> None:
        while not self._stop.wait(self.interval_s):
            self.sample()

    def peak(self, name: str, since: float = 0.0) -> int | None:
        values = [v for t, v in self.series.get(name, []) if t >= since]
        return max(values) if values else None

    def now(self) -> float:
        return time.monotonic() - self.started

    def peaks(self) -> dict[str, int]:
        return {name: max(v for _, v in s) for name, s in self.series.items() if s}
