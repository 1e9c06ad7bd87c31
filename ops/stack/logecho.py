"""The services' warnings and errors on the terminal of `questlog run`.

Each service logs to ``$QUESTLOG_HOME/logs/<name>.log`` (ops.stack.process). A LogEcho
follows those files from where they ended when the run began and prints each new line whose level
is WARN or above, prefixed with the service's name; INFO and DEBUG lines, stack-trace lines and
librdkafka's chatter stay in the files. A few warnings every start prints and that say nothing
about this run (QUIET: native libraries, JVM deprecation notices, a coordinator still loading) are
not echoed either. Each service may print at most BURST lines per WINDOW_S seconds; what is held
back is counted and said in one line, with the log to read, so that a storm (a Kafka away makes
every client warn every second) cannot flood the terminal.

The level is the first word of a line that names one, after only a timestamp and a pid, as each
service writes it:
``[ts] WARN`` (Kafka), ``ts WARN logger:`` (Hadoop, Spark), ``ts<TAB>WARN<TAB>`` (Trino),
``[ts] [pid] [WARNING]`` (Faust), ``ts WARNING name:`` (the collector and the sink's Python),
``[WARNING]`` (Granian).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import TextIO

LEVELS = {
    "TRACE": 0,
    "DEBUG": 1,
    "FINE": 1,
    "INFO": 2,
    "NOTICE": 2,
    "WARN": 3,
    "WARNING": 3,
    "ERROR": 4,
    "SEVERE": 4,
    "FATAL": 5,
    "CRITICAL": 5,
}
SHOWN = 3  # WARN and above
BURST = 5
WINDOW_S = 10.0
MAX_LINE = 400

# Warnings each start prints whatever happens (read once, they say nothing about this run).
QUIET = tuple(
    re.compile(p)
    for p in (
        r"NativeCodeLoader: Unable to load native-hadoop library",
        r"Unable to initialize FileSignerSecretProvider",
        r"Got null for restCsrfPreventionFilter",
        r"Only one (image|namespace edits) storage directory",
        r"dfsUsed file missing in",
        r"directoryscan\.throttle\.limit\.ms\.per\.sec",
        r"Performing controller activation\. The metadata log appears to be empty",
        r"^WARNING: (A terminally deprecated method|sun\.misc\.Unsafe|Please consider reporting|"
        r"Using incubator modules|A restricted method|.*--enable-native-access|Restricted methods)",
        r"Configuration allows spawning up to \d+ Python threads",
        r"Coordinator load in progress",  # librdkafka and aiokafka while Kafka's coordinator starts
        r"GroupCoordinatorNotAvailableError",
        r"Marking the coordinator dead",
        r"Setting default log level to",
        r"spark\.sql\.adaptive\.enabled is not supported in streaming",  # Spark, as the sink's query starts
        r"Disabling AQE since AQE is not supported in stateful workloads",
        r"Memory info update request to \S+ has not returned in",  # Trino while its own HTTP server starts
    )
)


def level(line: str) -> int | None:
    """The level a log line names within its first four words, after nothing but a timestamp and
    a pid (words with digits), or None: a continuation line, a stack trace."""
    for word in line.split(None, 4)[:4]:
        name = word.strip("[]:,")
        if name in LEVELS:
            return LEVELS[name]
        if not any(c.isdigit() for c in word):
            return None
    return None


def shown(line: str) -> bool:
    lvl = level(line)
    return lvl is not None and lvl >= SHOWN and not any(p.search(line) for p in QUIET)


class _Followed:
    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            self.offset = path.stat().st_size  # what earlier runs wrote is not this run's
        except OSError:
            self.offset = 0
        self.partial = b""
        self.window_start = 0.0
        self.in_window = 0
        self.held_back = 0


class LogEcho:
    """Follows the log files of ``names`` in ``log_dir``; ``poll()`` echoes what is new (a thread
    calls it every ``interval_s`` between ``start()`` and ``stop()``)."""

    def __init__(
        self,
        log_dir: Path,
        names: Iterable[str],
        out: TextIO | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.log_dir = log_dir
        self.out = out
        self.clock = clock
        self.files = {name: _Followed(log_dir / f"{name}.log") for name in names}
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def _say(self, text: str) -> None:
        out = self.out if self.out is not None else sys.stderr
        print(text, file=out, flush=True)

    def poll(self) -> None:
        now = self.clock()
        for name, f in self.files.items():
            if now - f.window_start >= WINDOW_S:
                if f.held_back:
                    self._say(
                        f"questlog: {name}: {f.held_back} more warning line(s) in {WINDOW_S:.0f}s not shown "
                        f"(log: {f.path})"
                    )
                f.window_start, f.in_window, f.held_back = now, 0, 0
            for line in self._new_lines(f):
                if not shown(line):
                    continue
                if f.in_window < BURST:
                    f.in_window += 1
                    text = line if len(line) <= MAX_LINE else line[:MAX_LINE] + " ..."
                    self._say(f"{name:>9} | {text}")
                else:
                    f.held_back += 1

    @staticmethod
    def _new_lines(f: _Followed) -> list[str]:
        try:
            size = f.path.stat().st_size
        except OSError:
            return []
        if size < f.offset:  # truncated or replaced: read it from the beginning
            f.offset, f.partial = 0, b""
        if size == f.offset:
            return []
        with open(f.path, "rb") as handle:
            handle.seek(f.offset)
            data = handle.read(min(size - f.offset, 4 << 20))  # a huge burst: the rest next round
        f.offset += len(data)
        data = f.partial + data
        lines = data.split(b"\n")
        f.partial = lines.pop()  # a line not finished yet
        return [line.decode(errors="replace").rstrip("\r") for line in lines if line.strip()]

    def start(self, interval_s: float = 0.5) -> None:
        def loop() -> None:
            while not self._stop.wait(interval_s):
                try:
                    self.poll()
                except Exception as exc:  # echoing is a convenience: it never stops the run
                    self._say(f"questlog: not echoing the services' warnings any more: {exc!r}")
                    return

        self._thread = threading.Thread(target=loop, name="log-echo", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(2)
            self._thread = None
        try:
            self.poll()  # the last lines before the stop
        except Exception:
            pass
