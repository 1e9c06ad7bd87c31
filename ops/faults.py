"""The fault suite: a retrying client sends a known set of event ids at a steady rate while every
service of the stack is killed (`kill -9`) or paused (SIGSTOP for 20 s, then SIGCONT) in turn; the
runner's watchdog brings each back. Afterwards the event ids in Trino must be exactly the ones the
collector accepted: none lost, none twice; every event the client was refused was refused with a
4xx or 503 that it saw (and retried, with the same event_id).

Run: `make faults` (100,000 events on a stack of its own, `.questlog-faults/`, ports shifted by
12000) or `python -m ops.faults --events N`. CI runs it small against the test pipeline
(tests/e2e/test_faults.py). Everything stays on 127.0.0.1 and every loop is bounded in time.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from questlog.settings import REPO_ROOT, Settings
from questlog.sql import execute

# (what, service, how): the order the suite applies them in.
FAULTS: tuple[tuple[str, str, str], ...] = (
    ("kill -9 router", "router", "kill"),
    ("kill -9 sink", "sink", "kill"),
    ("kill -9 collector", "collector", "kill"),
    ("kill -9 kafka", "kafka", "kill"),
    ("kill -9 namenode", "namenode", "kill"),
    ("kill -9 datanode", "datanode", "kill"),
    ("kill -9 trino", "trino", "kill"),
    ("kill -9 postgres", "postgres", "kill"),
    ("pause kafka", "kafka", "pause"),
    ("pause sink", "sink", "pause"),
    ("pause postgres", "postgres", "pause"),
)
PAUSE_S = 20.0
TABLE = "default_hits"  # the events are of type `default`


def fault_name(what: str, how: str, pause_s: float) -> str:
    """A fault's name in the table: a pause says how long it lasted."""
    return f"{what} {pause_s:g} s" if how == "pause" else what


def say(message: str) -> None:
    print(f"faults: {message}", file=sys.stderr, flush=True)


@dataclass
class Client:
    """Sends batches of events with its own event_ids at ``rate`` events/s; a batch the collector
    refuses with 503 (or that cannot reach it) is sent again, with the same ids, after a backoff
    (Retry-After when given), until accepted. Records what it saw."""

    url: str
    run: str
    rate: float
    batch: int = 10
    accepted: dict[str, float] = field(default_factory=dict)  # event_id -> when the 2xx came
    refusals: Counter = field(default_factory=Counter)  # "503", "connection error", "400", ...
    sent: int = 0
    stray: int = 0  # rows in Trino of events never accepted (set by run_suite)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def start(self) -> None:
        self._thread = threading.Thread(target=self._loop, name="fault-client", daemon=True)
        self._thread.start()

    def stop(self, timeout_s: float = 120.0) -> None:
        """Stop after the batch in hand is accepted (or ``timeout_s``)."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout_s)

    def _loop(self) -> None:
        session = requests.Session()
        interval = self.batch / self.rate
        next_at = time.monotonic()
        n = 0
        while not self._stop.is_set():
            ids = [f"fault-{self.run}-{n + i}" for i in range(self.batch)]
            n += self.batch
            self.sent += len(ids)
            self._send_until_accepted(session, ids)
            next_at += interval
            time.sleep(max(0.0, next_at - time.monotonic()))
            next_at = max(next_at, time.monotonic() - interval)  # no burst to catch up after an outage

    def _send_until_accepted(self, session: requests.Session, ids: list[str]) -> None:
        body = [{"event_type": "default", "event_id": event_id} for event_id in ids]
        attempt = 0
        deadline = time.monotonic() + 600  # bounded: a batch nobody accepts for 10 minutes is given up
        while time.monotonic() < deadline:
            attempt += 1
            wait = min(5.0, 0.2 * 2 ** min(attempt, 5))
            try:
                response = session.post(f"{self.url}/events", json=body, timeout=15)
            except requests.RequestException:
                self.refusals["connection error"] += 1
            else:
                if response.status_code in (200, 201, 202):
                    now = time.monotonic()
                    for event_id in ids:
                        self.accepted[event_id] = now
                    return
                self.refusals[str(response.status_code)] += 1
                if response.status_code < 500 and response.status_code != 429:
                    return  # a 4xx is final: the client saw it, nothing was stored
                try:
                    wait = max(wait, float(response.headers.get("Retry-After", 0)))
                except ValueError:
                    pass
            if self._stop.is_set() and attempt > 50:
                return
            time.sleep(wait)


@dataclass
class Row:
    fault: str
    recover_s: float | None
    accepted: int
    rows: int
    lost: int
    duplicates: int


def pid_of(pipeline, name: str) -> int:
    pid = pipeline.supervisor.running_pid(name)
    if pid is None:
        raise RuntimeError(f"{name} is not running")
    return pid


def landed(settings: Settings, run: str) -> Counter:
    """event_id -> rows, for this run's events."""
    _, rows = execute(
        settings, f"SELECT event_id, count(*) FROM {TABLE} WHERE event_id LIKE 'fault-{run}-%' GROUP BY event_id"
    )
    return Counter({event_id: count for event_id, count in rows})


def probe(settings: Settings, timeout_s: float) -> float | None:
    """Send one event (retrying) and wait until it is queryable; seconds it took, or None."""
    started = time.monotonic()
    event_id = f"probe-{uuid.uuid4()}"
    deadline = started + timeout_s
    sent = False
    while time.monotonic() < deadline:
        try:
            if not sent:
                response = requests.post(
                    f"{settings.collector_url}/events", timeout=10, json={"event_type": "default", "event_id": event_id}
                )
                sent = response.status_code == 202
            if sent and execute(settings, f"SELECT count(*) FROM {TABLE} WHERE event_id = '{event_id}'")[1][0][0]:
                return time.monotonic() - started
        except Exception:  # the stack is recovering: anything may refuse for a while
            pass
        time.sleep(1.0)
    return None


def run_suite(
    pipeline,
    rate: float,
    faults=FAULTS,
    settle_s: float = 5.0,
    recover_timeout_s: float = 420.0,
    pause_s: float = PAUSE_S,
    on_row: Callable[[Row], None] | None = None,
) -> tuple[list[Row], Client]:
    """Apply ``faults`` in turn to a running, watched pipeline while a client sends; one Row per
    fault (counting the events accepted from that fault until the next) and a last row of totals,
    and the client (what it saw)."""
    settings = pipeline.settings
    run = uuid.uuid4().hex[:10]
    client = Client(settings.collector_url, run, rate)
    windows: list[tuple[str, float, float | None]] = []  # (fault, start, recovered after)
    if probe(settings, recover_timeout_s) is None:
        raise RuntimeError("the pipeline does not land events before the first fault")
    client.start()
    try:
        for what, service, how in faults:
            time.sleep(settle_s)  # traffic flowing before the fault
            start = time.monotonic()
            pid = pid_of(pipeline, service)
            say(f"{what} (pid {pid})")
            if how == "kill":  # the whole process group: Granian's workers or Spark's JVM die with it
                os.killpg(pid, signal.SIGKILL)
            else:
                os.killpg(pid, signal.SIGSTOP)
                time.sleep(pause_s)
                os.killpg(pid, signal.SIGCONT)
            recovered = probe(settings, recover_timeout_s)
            took = None if recovered is None else time.monotonic() - start
            say(f"{what}: recovered in {took:.1f}s" if took is not None else f"{what}: NOT recovered")
            windows.append((fault_name(what, how, pause_s), start, took))
    finally:
        client.stop()
    # Everything accepted must land: wait until it has (bounded), then count.
    deadline = time.monotonic() + recover_timeout_s
    while time.monotonic() < deadline:
        counts = landed(settings, run)
        if set(client.accepted) <= set(counts):
            break
        time.sleep(3)
    probe(settings, recover_timeout_s)  # and whatever came after them
    counts = landed(settings, run)
    rows: list[Row] = []
    bounds = [start for _, start, _ in windows] + [float("inf")]
    for (what, start, took), end in zip(windows, bounds[1:], strict=True):
        ids = [e for e, at in client.accepted.items() if start <= at < end]
        rows.append(_row(what, took, ids, counts))
    before = [e for e, at in client.accepted.items() if at < bounds[0]]
    if rows and before:  # accepted before the first fault: counted with the first
        first = rows[0]
        rows[0] = _row(
            first.fault,
            first.recover_s,
            before + [e for e, at in client.accepted.items() if bounds[0] <= at < bounds[1]],
            counts,
        )
    rows.append(_row("all", None, list(client.accepted), counts))
    # Rows of events the client was never told were accepted (a batch it gave up on): must be none.
    client.stray = sum(counts[e] for e in counts if e not in client.accepted)
    for row in rows:
        if on_row:
            on_row(row)
    return rows, client


def _row(what: str, took: float | None, ids: list[str], counts: Counter) -> Row:
    return Row(
        what,
        took,
        len(ids),
        sum(counts[e] for e in ids),
        sum(1 for e in ids if counts[e] == 0),
        sum(counts[e] - 1 for e in ids if counts[e] > 1),
    )


def table(rows: list[Row], client: Client | None = None) -> str:
    lines = [
        "| fault | time to recover | events accepted | rows | lost | duplicates |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    for r in rows:
        took = f"{r.recover_s:.1f} s" if r.recover_s is not None else ("" if r.fault.startswith("all") else "no")
        lines.append(f"| {r.fault} | {took} | {r.accepted:,} | {r.rows:,} | {r.lost:,} | {r.duplicates:,} |")
    if client is not None:
        seen = ", ".join(f"{k}: {v:,}" for k, v in sorted(client.refusals.items())) or "none"
        lines.append("")
        lines.append(
            f"Client: {client.sent:,} events sent, {len(client.accepted):,} accepted; refusals it saw "
            f"(each retried with the same event_ids): {seen}; rows of events never accepted: "
            f"{client.stray}."
        )
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    from ops.stack.runner import Pipeline, stop_all

    parser = argparse.ArgumentParser(description="Questlog's fault suite on a stack of its own.")
    parser.add_argument("--events", type=int, default=100_000, help="about how many events to send")
    parser.add_argument("--out", default=str(REPO_ROOT / "benchmarks" / "results" / "faults.md"))
    args = parser.parse_args(argv)
    home = REPO_ROOT / ".questlog-faults"
    defaults = Settings.from_env({}, cache=Settings.from_env().cache)  # whatever this shell exports
    settings = defaults.shifted(12_000, home, sink_trigger_s=2.0)
    stop_all(settings)
    home.mkdir(parents=True, exist_ok=True)
    (home / "catalog.json").write_text((REPO_ROOT / "questlog" / "catalog" / "catalog.json").read_text())
    pipeline = Pipeline(settings)
    stopping = threading.Event()
    watcher = threading.Thread(target=pipeline.watch, args=(stopping.is_set,), daemon=True)
    started = time.monotonic()
    try:
        pipeline.up()
        watcher.start()
        # The faults take about 12 minutes in all on 2 cores; the rate spreads the events over them.
        rate = max(5.0, args.events / 720.0)
        rows, client = run_suite(pipeline, rate, on_row=lambda r: say(str(r)))
    finally:
        stopping.set()
        watcher.join(10)
        pipeline.down()
    text = table(rows, client)
    print(text)
    header = (
        f"Fault suite, {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores: `make faults` "
        f"({args.events:,} events requested, {time.monotonic() - started:.0f} s in all)\n\n"
    )
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(header + text)
    ok = all(r.lost == 0 and r.duplicates == 0 for r in rows) and client.stray == 0
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
