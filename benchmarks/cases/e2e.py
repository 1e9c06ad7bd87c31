"""End to end: a steady load of POST /events batches into the running collector, with a probe
event sent on its own every second; send -> queryable in Trino, from the probes.

The load comes from a paced sender (batches due at fixed times, sent by a few threads; one that
falls behind sends at once, and the achieved rate is reported). Probes are `default` events with
ids of their own. One poller asks Trino for all of this run's probes seen so far, twice a second,
with one narrow query on the small `default_hits` table (no other traffic of the bench writes
there), bounded by `received_at` as a dashboard of the last minutes would be: Trino skips every
data file whose column statistics end before this run (the files of earlier runs and cases, up to
hundreds until the compactor merges them, each one more file to open twice a second on the same 2
cores as the pipeline). A probe's latency is from just before its request to the start of the first
query that returned it, so it is at most ~0.5 s late.
"""

from __future__ import annotations

import json
import math
import threading
import time
from datetime import UTC, datetime

import requests

from benchmarks.context import Context, num
from benchmarks.events import bodies, load_types, probe_id
from benchmarks.kafka_util import Offsets
from benchmarks.lag import lags, settle
from questlog.catalog import load_catalog
from questlog.sql import connect

BATCH = 100
SENDERS = 4
POLL_S = 0.5


def percentile(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q / 100 * len(ordered)) - 1)]  # nearest rank


class Load:
    def __init__(self, url: str, body: bytes, per_batch: int, rate: float, seconds: float) -> None:
        self.url, self.body, self.per_batch = url, body, per_batch
        self.interval = per_batch / rate
        self.batches = int(seconds / self.interval)
        self.next = 0
        self.accepted = self.failed = 0
        self.lock = threading.Lock()
        self.started = 0.0
        self.finished = 0.0

    def worker(self) -> None:
        session = requests.Session()
        while True:
            with self.lock:
                i = self.next
                self.next += 1
            if i >= self.batches:
                return
            delay = self.started + i * self.interval - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            try:
                r = session.post(self.url, data=self.body, headers={"Content-Type": "application/json"}, timeout=30)
                ok = r.status_code == 202
            except requests.RequestException:
                ok = False
            with self.lock:
                if ok:
                    self.accepted += self.per_batch
                else:
                    self.failed += self.per_batch

    def run(self) -> None:
        self.started = time.monotonic()
        threads = [threading.Thread(target=self.worker, daemon=True) for _ in range(SENDERS)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        self.finished = time.monotonic()


def measure(ctx: Context, rate: int, offsets: Offsets) -> dict:
    s, size = ctx.settings, ctx.size
    catalog = load_catalog(s.catalog)
    per_batch = min(BATCH, max(1, rate // 10))
    load = Load(
        f"{s.collector_url}/events",
        json.dumps(bodies(load_types(catalog), per_batch)).encode(),
        per_batch,
        rate,
        size.e2e_seconds,
    )
    label = f"r{rate}"
    prefix = probe_id(ctx.run, label, 0)[:-5]
    table = catalog.types["default"].table
    sent: dict[str, float] = {}
    seen: dict[str, float] = {}
    probe_failures: list[int | str] = []
    stop_probes = threading.Event()

    def probes() -> None:
        session = requests.Session()
        start, i = time.time(), 0
        while not stop_probes.is_set():
            pid = probe_id(ctx.run, label, i)
            t = time.time()
            try:
                r = session.post(
                    f"{s.collector_url}/events", json={"event_type": "default", "event_id": pid}, timeout=30
                )
                if r.status_code == 202:
                    sent[pid] = t
                else:
                    probe_failures.append(r.status_code)
            except requests.RequestException as exc:
                probe_failures.append(str(exc))
            i += 1
            stop_probes.wait(max(0.0, start + i - time.time()))

    done_polling = threading.Event()

    # the collector stamps received_at (UTC, same machine): 10 s of margin
    since = datetime.fromtimestamp(time.time() - 10, UTC).strftime("%Y-%m-%d %H:%M:%S")

    def poller() -> None:
        conn = connect(s)
        cur = conn.cursor()
        try:
            while not done_polling.is_set():
                asked = time.time()
                cur.execute(
                    f"SELECT event_id FROM \"{table}\" WHERE event_id LIKE '{prefix}%' AND received_at >= TIMESTAMP '{since}'"
                )
                for (pid,) in cur.fetchall():
                    seen.setdefault(pid, asked)
                done_polling.wait(max(0.0, asked + POLL_S - time.time()))
        finally:
            conn.close()

    threads = [threading.Thread(target=probes, daemon=True), threading.Thread(target=poller, daemon=True)]
    for t in threads:
        t.start()
    ctx.say(f"end to end: {rate:,} events/s for {size.e2e_seconds:.0f} s, a probe every second")
    load.run()
    stop_probes.set()
    threads[0].join(timeout=35)
    at_end = lags(s, offsets)
    drain_until = time.monotonic() + size.e2e_drain_cap_s
    while time.monotonic() < drain_until and not set(sent) <= set(seen):
        time.sleep(0.2)
    done_polling.set()
    threads[1].join(timeout=35)
    after = lags(s, offsets)
    latencies = [seen[p] - sent[p] for p in sent if p in seen]
    sending = load.finished - load.started
    return {
        "rate": rate,
        "achieved": load.accepted / sending if sending else 0,
        "failed": load.failed,
        "probes": len(sent),
        "landed": len(latencies),
        "latencies": latencies,
        "p50": percentile(latencies, 50),
        "p90": percentile(latencies, 90),
        "p99": percentile(latencies, 99),
        "lag_end": at_end,
        "lag_after": after,
        "drain_cap_s": size.e2e_drain_cap_s,
        "probe_failures": len(probe_failures),
    }


def run(ctx: Context) -> None:
    offsets = Offsets(ctx.settings.kafka_client())
    try:
        for rate in ctx.size.e2e_rates:
            needed = ctx.size.settle_cap_s + ctx.size.e2e_seconds + ctx.size.e2e_drain_cap_s + 30
            if ctx.left_s() < needed:
                ctx.add(
                    "end to end", f"{rate:,} events/s: SKIPPED", f"not run: {ctx.left_s():.0f} s left of the budget"
                )
                continue
            skipped = settle(ctx.pipeline, offsets, ctx.size.settle_cap_s, ctx.say)
            if skipped:
                ctx.notes.append(
                    f"end to end: {skipped:,} raw events left by earlier load were skipped before the {rate:,}/s run"
                )
            r = measure(ctx, rate, offsets)
            kept_up = r["landed"] == r["probes"] and r["lag_after"]["router"] == 0 and r["lag_after"]["sink"] == 0
            lag = r["lag_end"]
            ours = (
                f"p50 {num(r['p50'], 1)} s, p90 {num(r['p90'], 1)} s, p99 {num(r['p99'], 1)} s "
                f"({r['landed']} of {r['probes']} probes landed); sent {num(r['achieved'])} events/s"
                f"{', ' + format(r['failed'], ',') + ' refused' if r['failed'] else ''}; "
                f"lag when the load stopped: router {num(lag['router'])}, sink {num(lag['sink'])} records; "
                f"kept up: {'yes' if kept_up else 'no'}"
            )
            if not kept_up:
                ours += (
                    f" (after {r['drain_cap_s']:.0f} s more: router {num(r['lag_after']['router'])}, "
                    f"sink {num(r['lag_after']['sink'])} behind)"
                )
            ctx.add(
                "end to end", f"{rate:,} events/s for {ctx.size.e2e_seconds:.0f} s: send -> queryable in Trino", ours
            )
            ctx.figure(
                "latency",
                {
                    "rate": rate,
                    "latencies": r["latencies"],
                    "probes": r["probes"],
                    "landed": r["landed"],
                    "p50": r["p50"],
                    "p90": r["p90"],
                    "p99": r["p99"],
                },
            )
    finally:
        offsets.close()
