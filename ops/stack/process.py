"""Starting, health-checking and stopping the stack's processes.

Each service runs in its own process group (its children, e.g. Spark's JVM or gunicorn's
workers, go with it), logs to ``$QUESTLOG_HOME/logs/<name>.log`` and leaves a pid file in
``$QUESTLOG_HOME/run/`` so that `questlog stop` in another shell can find it.
"""

from __future__ import annotations

import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import psutil

log = logging.getLogger(__name__)


class ServiceError(RuntimeError):
    pass


@dataclass
class Service:
    name: str
    argv: Sequence[str]
    health: Callable[[], bool]
    env: dict[str, str] = field(default_factory=dict)
    cwd: Path | None = None
    ports: Sequence[tuple[str, int]] = ()
    start_timeout_s: float = 120.0
    setup: Callable[[], None] | None = None  # run before each start (format once, write configs)
    url: str = ""  # where a user reaches it, for the banner
    user: str | None = None  # run as this user (PostgreSQL refuses root); None: as we run
    # environment read just before each start (a password from its file): never on the command line
    secret_env: Callable[[], dict[str, str]] | None = None


def port_open(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def tail(path: Path, lines: int = 25) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return "(no log)"


def _start_time(pid: int) -> str | None:
    """When ``pid`` started (seconds since the epoch, to the clock tick), or None if it is gone:
    with the pid, it names one process, whatever pid reuse happens later."""
    try:
        return f"{psutil.Process(pid).create_time():.2f}"
    except psutil.Error:
        return None


def _same_start(now: str, recorded: str) -> bool:
    """Whether a start time read now is the one a pid file recorded; a pid file of an earlier
    version holds clock ticks since boot instead of seconds since the epoch."""
    if "." in recorded:
        return now == recorded
    try:
        return abs(psutil.boot_time() + int(recorded) / os.sysconf("SC_CLK_TCK") - float(now)) < 1.0
    except ValueError:
        return False


def uptime_s(pid: int) -> float | None:
    """Seconds since ``pid`` started, or None if it is gone."""
    started = _start_time(pid)
    return None if started is None else max(0.0, time.time() - float(started))


def _alive(pid: int) -> bool:
    try:
        return _running(psutil.Process(pid))
    except psutil.Error:
        return False


def _running(proc: psutil.Process) -> bool:
    """Whether ``proc`` still runs. A zombie (exited, not reaped yet) does not, unless only its
    main thread has exited: a JVM on its way out shows as a zombie while its other threads are
    still being torn down, holding its sockets open (seen: Kafka's port still taken right after
    `questlog stop` had found its zombie)."""
    if proc.status() != psutil.STATUS_ZOMBIE:
        return True
    return proc.num_threads() > 1


def rotate_logs(log_dir: Path, max_bytes: int) -> list[str]:
    """Every service log over ``max_bytes``: its content copied to ``<name>.log.1`` (replacing the
    copy before), then the log emptied in place. A service writes its log with O_APPEND, so it goes
    on at the new end, and a reader following it (ops/stack/logecho.py) starts it again. So each
    service keeps at most about twice ``max_bytes`` (plus what it writes between two rounds); what
    it writes between the copy and the truncation (the time of a copy) is lost, as with
    logrotate's copytruncate. Returns the names of the logs rotated."""
    rotated = []
    for path in sorted(log_dir.glob("*.log")):
        try:
            if path.stat().st_size <= max_bytes:
                continue
            shutil.copyfile(path, path.with_name(path.name + ".1"))
            os.truncate(path, 0)
        except OSError:  # gone meanwhile, or a full disk: the next round tries again
            continue
        rotated.append(path.name)
    return rotated


class Supervisor:
    def __init__(self, home: Path) -> None:
        self.home = home
        self.run_dir = home / "run"
        self.log_dir = home / "logs"
        self.procs: dict[str, subprocess.Popen] = {}

    def pidfile(self, name: str) -> Path:
        return self.run_dir / f"{name}.pid"

    def log_path(self, name: str) -> Path:
        return self.log_dir / f"{name}.log"

    def recorded_pid(self, name: str) -> int | None:
        """The pid in the service's pid file if that process (or, once it is gone, its process
        group) is still the one we started: the pid file records its start time, so a pid reused
        by an unrelated process after a reboot or a crash is never signalled."""
        try:
            pid_text, started = self.pidfile(name).read_text().split()[:2]
            pid = int(pid_text)
        except (OSError, ValueError):
            return None
        now = _start_time(pid)
        if now is not None and _same_start(now, started):
            return pid
        return pid if now is None and self._group_alive(pid) else None

    def running_pid(self, name: str) -> int | None:
        pid = self.recorded_pid(name)
        return pid if pid is not None and _alive(pid) else None

    def start(self, svc: Service) -> None:
        if self.running_pid(svc.name):
            raise ServiceError(
                f"{svc.name} is already running (pid {self.running_pid(svc.name)}); run `questlog stop` first"
            )
        for host, port in svc.ports:
            if port_open(host, port):
                raise ServiceError(
                    f"port {host}:{port} needed by {svc.name} is in use by another process; "
                    "is another Questlog (or Kafka/HDFS/Trino) running? Try `make stop`."
                )
        self.run_dir.mkdir(parents=True, exist_ok=True)
        self.log_dir.mkdir(parents=True, exist_ok=True)
        if svc.setup:
            svc.setup()
        logfile = open(self.log_path(svc.name), "ab")
        logfile.write(f"\n=== {time.strftime('%Y-%m-%d %H:%M:%S')} starting: {' '.join(svc.argv)}\n".encode())
        logfile.flush()
        env = {**os.environ, **svc.env, **(svc.secret_env() if svc.secret_env else {})}
        proc = subprocess.Popen(
            list(svc.argv),
            cwd=svc.cwd,
            env=env,
            stdout=logfile,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,
            user=svc.user,
            extra_groups=[] if svc.user else None,
        )
        logfile.close()
        self.procs[svc.name] = proc
        self.pidfile(svc.name).write_text(f"{proc.pid} {_start_time(proc.pid)}\n")

    def wait_healthy(self, svc: Service) -> float:
        started = time.monotonic()
        deadline = started + svc.start_timeout_s
        proc = self.procs.get(svc.name)
        while True:
            if proc is not None and proc.poll() is not None:
                raise ServiceError(
                    f"{svc.name} exited with code {proc.returncode} while starting; "
                    f"last lines of {self.log_path(svc.name)}:\n{tail(self.log_path(svc.name))}"
                )
            try:
                if svc.health():
                    return time.monotonic() - started
            except Exception as exc:  # a health probe failing is the normal state while starting
                log.debug("%s not healthy yet: %s", svc.name, exc)
            if time.monotonic() > deadline:
                raise ServiceError(
                    f"{svc.name} did not become healthy within {svc.start_timeout_s:.0f}s; "
                    f"last lines of {self.log_path(svc.name)}:\n{tail(self.log_path(svc.name))}"
                )
            time.sleep(0.5)

    def exited(self) -> list[tuple[str, int]]:
        """Services started by this supervisor that have exited since."""
        return [(name, p.returncode) for name, p in self.procs.items() if p.poll() is not None]

    def stop(self, name: str, timeout_s: float = 30.0) -> bool:
        """Stop a service: SIGTERM to its main process, so it can shut down in order (the sink
        stops its query before Spark's JVM goes); then SIGTERM to what is left of its process
        group; SIGKILL after ``timeout_s``. True if it was running."""
        pid = self.recorded_pid(name)
        if pid is None or not self._group_alive(pid):
            self.pidfile(name).unlink(missing_ok=True)
            return False
        deadline = time.monotonic() + timeout_s
        for signal_group in (False, True):
            try:
                if signal_group:
                    os.killpg(pid, signal.SIGTERM)
                else:
                    os.kill(pid, signal.SIGTERM)
            except ProcessLookupError:
                pass
            alive = (lambda: self._group_alive(pid)) if signal_group else (lambda: _alive(pid))
            while time.monotonic() < deadline and alive():
                self._reap(name)
                time.sleep(0.2)
        if self._group_alive(pid):
            print(f"questlog: {name} did not stop in {timeout_s:.0f}s; killing it", file=sys.stderr)
            try:
                os.killpg(pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            time.sleep(0.5)
        self._reap(name)
        self.pidfile(name).unlink(missing_ok=True)
        return True

    def _reap(self, name: str) -> None:
        proc = self.procs.get(name)
        if proc is not None:
            proc.poll()

    @staticmethod
    def _group_alive(pgid: int) -> bool:
        """Whether any live (not zombie) process is in process group ``pgid``. The kernel answers
        whether the group has any process at all; only then are its members looked for."""
        try:
            os.killpg(pgid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            pass  # some member is not ours to signal: it exists
        for proc in psutil.process_iter():
            try:
                if os.getpgid(proc.pid) == pgid and _running(proc):
                    return True
            except (ProcessLookupError, psutil.Error):
                continue
        return False
