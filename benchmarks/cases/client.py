"""Client: one questlog_client Tracker sending as fast as it can to the running collector, beside a
hand-written loop that posts ready-made JSON batches of the same size with the same concurrency
(what the HTTP part costs without a client); and the cost of one `track()` call on the game's
thread, with and without the catalog check.

`make bench CASE=client` (a pipeline of its own), or as part of `make bench`."""

from __future__ import annotations

import json
import sys
import threading
import time

import requests

from benchmarks.context import Context, num, ratio
from benchmarks.events import BODIES, load_types
from benchmarks.stack import Processes, free_port, http_ok
from ops.stack.process import Service
from questlog.catalog import load_catalog
from questlog.settings import REPO_ROOT
from questlog_client import Tracker

BATCH, SENDERS = 500, 2
BASELINE = f"requests.post of ready-made batches of {BATCH}, {SENDERS} threads"


def events_for(ctx: Context) -> int:
    return 100_000 if ctx.size.name == "full" else 2_000


def track_overhead_us(catalog, checked: bool, n: int) -> float:
    """Microseconds per track() on the caller's thread: the queue is large enough never to fill
    and the tracker sends nowhere (a closed port), so only the call is timed."""
    t = Tracker(
        "http://127.0.0.1:9",
        catalog=catalog if checked else None,
        max_queue=n + 1,
        batch_size=n + 1,
        flush_interval_s=3600,
        senders=1,
    )
    fields = BODIES["purchase_sword"]
    track = t.track
    started = time.perf_counter()
    for _ in range(n):
        track("purchase_sword", user_id="player1", **fields)
    took = time.perf_counter() - started
    t._queue.clear()  # nothing is meant to be sent: no "lost" warning at close
    t._in = t._out
    t.close(0)
    return took / n * 1e6


def tracker_rate(url: str, run: str, catalog, types: list[str], n: int) -> tuple[float, dict]:
    """Events/s from the first track() to the last 2xx, for ``n`` events of ``types``."""
    t = Tracker(
        url, catalog=catalog, batch_size=BATCH, senders=SENDERS, id_prefix=f"bench-{run}-client", max_queue=100_000
    )
    started = time.monotonic()
    for i in range(n):
        event_type = types[i % len(types)]
        t.track(event_type, user_id=f"player{i % 5000}", **BODIES[event_type])
    tracked = time.monotonic() - started
    if not t.flush(max(60.0, n / 2000)):
        raise RuntimeError(f"the tracker did not send {n} events in time: {t.stats}")
    took = time.monotonic() - started
    t.close()
    if t.stats.accepted != n:
        raise RuntimeError(f"the tracker had {t.stats.accepted} of {n} events accepted: {t.stats}")
    return n / took, {"tracked_s": tracked, "retries": t.stats.retries, "errors": dict(t.stats.errors)}


def baseline_rate(ctx: Context, types: list[str], n: int) -> float:
    bodies = []
    for start in range(0, n, BATCH):
        batch = [
            {
                "event_type": types[i % len(types)],
                "event_id": f"bench-{ctx.run}-raw-{i}",
                "client_ts": "2026-11-29T09:59:58+00:00",
                "user_id": f"player{i % 5000}",
                **BODIES[types[i % len(types)]],
            }
            for i in range(start, min(n, start + BATCH))
        ]
        bodies.append(json.dumps(batch).encode())
    url = f"{ctx.settings.collector_url}/events"
    lock = threading.Lock()
    failures: list[int] = []

    def post() -> None:
        session = requests.Session()
        while True:
            with lock:
                if not bodies:
                    return
                data = bodies.pop()
            while True:
                r = session.post(url, data=data, headers={"Content-Type": "application/json"}, timeout=60)
                if r.status_code == 202:
                    break
                failures.append(r.status_code)
                time.sleep(0.2)

    threads = [threading.Thread(target=post) for _ in range(SENDERS)]
    started = time.monotonic()
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    if failures:
        ctx.notes.append(
            f"client: the baseline loop was refused {len(failures)} times ({sorted(set(failures))}), and retried"
        )
    return n / (time.monotonic() - started)


def run(ctx: Context) -> None:
    catalog = load_catalog(ctx.settings.catalog)
    types = load_types(catalog)
    n = events_for(ctx)
    calls = 100_000 if ctx.size.name == "full" else 20_000
    ctx.say(f"client: {calls:,} track() calls, with and without the catalog check")
    checked = min(track_overhead_us(catalog, True, calls) for _ in range(3))
    unchecked = min(track_overhead_us(catalog, False, calls) for _ in range(3))
    ctx.add(
        "client",
        "overhead of one track() call on the caller's thread (best of 3)",
        f"{checked:.1f} µs with the catalog check, {unchecked:.1f} µs without",
    )
    ctx.say(f"client: one Tracker sends {n:,} events to the collector (batches of {BATCH}, {SENDERS} senders)")
    ours, info = tracker_rate(ctx.settings.collector_url, ctx.run, catalog, types, n)
    ctx.say(f"client: the baseline loop sends {n:,} events")
    base = baseline_rate(ctx, types, n)
    ctx.add(
        "client",
        f"one Tracker, {n:,} events to the collector, first track() to last 2xx",
        f"{num(ours)} events/s (all tracked in {info['tracked_s']:.1f} s; {info['retries']} retries)",
        f"{BASELINE}: {num(base)} events/s",
        ratio(ours, base),
    )
    ctx.figure(
        "throughput",
        {
            "stage": "client",
            "measure": f"one Tracker, batches of {BATCH}",
            "unit": "events/s",
            "ours": ours,
            "baseline": base,
            "baseline_name": BASELINE,
        },
    )
    ctx.data["client"] = {
        "events": n,
        "events_per_s": ours,
        "baseline_events_per_s": base,
        "track_us_checked": checked,
        "track_us_unchecked": unchecked,
        **info,
    }
    # The client's own ceiling: the same Tracker against a server that only reads the body.
    procs = Processes(ctx.home / "client", ctx.rss)
    port = free_port(ctx.settings.collector_port + 3, ctx.ports)
    try:
        procs.start(noop_service(port), label="do-nothing Flask (client ceiling)")
        ceiling, _ = tracker_rate(f"http://127.0.0.1:{port}", ctx.run, catalog, types, n)
    finally:
        procs.stop_all()
    ctx.add(
        "client",
        f"one Tracker, {n:,} events to a do-nothing Flask server (gunicorn 2x8): the client's ceiling",
        f"{num(ceiling)} events/s",
    )


def noop_service(port: int) -> Service:
    return Service(
        "noop-flask-client",
        [
            f"{sys.prefix}/bin/gunicorn",
            "--bind",
            f"127.0.0.1:{port}",
            "--workers",
            "2",
            "--threads",
            "8",
            "benchmarks.baselines.noop_flask:app",
        ],
        http_ok(f"http://127.0.0.1:{port}/healthz"),
        env={"PYTHONPATH": str(REPO_ROOT)},
        cwd=REPO_ROOT,
        ports=[("127.0.0.1", port)],
        start_timeout_s=60,
    )


if __name__ == "__main__":
    # With no stack: `python -m benchmarks.cases.client` prints the cost of track() and one
    # Tracker's rate against a do-nothing server (its ceiling); `make bench CASE=client` adds the
    # rate to the real collector beside a hand-written loop.
    import tempfile
    from pathlib import Path

    cat = load_catalog()
    for check in (True, False):
        us = min(track_overhead_us(cat, check, 200_000) for _ in range(3))
        print(f"track(): {us:.2f} µs per call ({'with' if check else 'without'} the catalog check)")
    procs = Processes(Path(tempfile.mkdtemp(prefix="questlog-client-bench-")))
    port = free_port(25_500, set())
    try:
        procs.start(noop_service(port))
        rate, info = tracker_rate(f"http://127.0.0.1:{port}", "main", cat, load_types(cat), 200_000)
        print(
            f"one Tracker, 200,000 events to a do-nothing Flask server: {rate:,.0f} events/s "
            f"(all tracked in {info['tracked_s']:.1f} s)"
        )
    finally:
        procs.stop_all()
