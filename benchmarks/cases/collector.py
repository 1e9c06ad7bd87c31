"""Collector: `ab` against Questlog's running collector, the seed's collector and a do-nothing
Flask app on gunicorn, one after the other at each concurrency; the router and the sink are
paused while Questlog's collector is measured (`DOWNSTREAM`)."""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import signal
import subprocess
import sys
from collections.abc import Iterator

from benchmarks.context import Context, num, ratio
from benchmarks.events import bodies, load_types
from benchmarks.kafka_util import admin_env, create_topics
from benchmarks.stack import Processes, free_port, http_ok
from ops.stack.process import Service, port_open
from questlog.catalog import load_catalog
from questlog.settings import REPO_ROOT

BIN = f"{sys.prefix}/bin"
SEED, NOOP, OURS = "seed collector", "do-nothing Flask (gunicorn 2x8)", "Questlog"


def parse_ab(out: str) -> dict:
    def grab(pattern: str, default=None):
        m = re.search(pattern, out, re.M)
        return float(m.group(1)) if m else default

    return {
        "rps": grab(r"^Requests per second:\s+([\d.]+)"),
        "complete": grab(r"^Complete requests:\s+(\d+)", 0),
        "failed": grab(r"^Failed requests:\s+(\d+)", 0),
        "non2xx": grab(r"^Non-2xx responses:\s+(\d+)", 0),
        "p50": grab(r"^\s+50%\s+(\d+)"),
        "p99": grab(r"^\s+99%\s+(\d+)"),
    }


def ab(ctx: Context, url: str, concurrency: int, requests: int, post_file: str | None = None) -> dict:
    ab_bin = shutil.which("ab")
    if ab_bin is None:
        raise RuntimeError("Apache Bench (`ab`) is not installed: apt-get install apache2-utils")
    cmd = [
        ab_bin,
        "-t",
        str(ctx.size.ab_seconds),
        "-n",
        str(requests),
        "-c",
        str(concurrency),
        "-H",
        "Host: user1.comcast.com",
        "-s",
        "30",
    ]
    if post_file:
        cmd += ["-p", post_file, "-T", "application/json"]
    result = subprocess.run(cmd + [url], capture_output=True, text=True, timeout=ctx.size.ab_seconds + 90)
    stats = parse_ab(result.stdout)
    if result.returncode != 0 or stats["rps"] is None:
        raise RuntimeError(f"{' '.join(cmd)} {url} failed: {result.stderr[-500:]}")
    if stats["failed"] or stats["non2xx"]:
        ctx.notes.append(
            f"collector: {url} -c {concurrency}: {stats['failed']:.0f} failed, "
            f"{stats['non2xx']:.0f} non-2xx of {stats['complete']:.0f}"
        )
    return stats


# The stages that consume what the collector produces. The seed's collector writes to a topic nobody
# reads and the do-nothing app writes nowhere; on a real deployment the router and the sink run on
# other machines. While ab runs against Questlog's collector they are paused (SIGSTOP, then SIGCONT),
# so all three servers share the 2 cores with the same neighbours: Kafka (which acknowledges every
# event to Questlog's collector, acks=all) and idle services. They catch up right after; the end to
# end case measures everything running at once.
DOWNSTREAM = ("router", "sink", "compactor")


@contextlib.contextmanager
def downstream_paused(ctx: Context) -> Iterator[None]:
    groups = [pid for name in DOWNSTREAM if (pid := ctx.pipeline.supervisor.running_pid(name)) is not None]
    stopped = []
    try:
        for pgid in groups:
            os.killpg(pgid, signal.SIGSTOP)
            stopped.append(pgid)
        yield
    finally:
        for pgid in stopped:
            os.killpg(pgid, signal.SIGCONT)


def median_run(runs: list[dict]) -> dict:
    """The run with the median rate (the lower middle one of an even number)."""
    return sorted(runs, key=lambda r: r["rps"])[(len(runs) - 1) // 2]


def cell(stats: dict, unit: str = "req/s", per: int = 1) -> str:
    return f"{num(stats['rps'] * per)} {unit} (p50 {num(stats['p50'])} ms, p99 {num(stats['p99'])} ms)"


def run(ctx: Context) -> None:
    s = ctx.settings
    procs = Processes(ctx.home / "collector", ctx.rss)
    seed_topic = f"bench.{ctx.run}.seed"
    create_topics(s.kafka_client(), [seed_topic], 1)
    seed_port = free_port(s.collector_port + 1, ctx.ports)
    noop_port = free_port(seed_port + 1, ctx.ports)
    env = {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    # the seed's collector speaks to Kafka as the admin (its password file named, not given)
    seed_env = {**env, **admin_env(s)}
    try:
        procs.start(
            Service(
                "seed-collector",
                [
                    sys.executable,
                    "-m",
                    "benchmarks.baselines.seed_collector",
                    "--bind",
                    f"127.0.0.1:{seed_port}",
                    "--kafka",
                    s.kafka_bootstrap,
                    "--topic",
                    seed_topic,
                ],
                lambda: port_open("127.0.0.1", seed_port),
                env=seed_env,
                cwd=REPO_ROOT,
                ports=[("127.0.0.1", seed_port)],
                start_timeout_s=60,
            ),
            label="seed collector (baseline)",
        )
        procs.start(
            Service(
                "noop-flask",
                [
                    f"{BIN}/gunicorn",
                    "--bind",
                    f"127.0.0.1:{noop_port}",
                    "--workers",
                    "2",
                    "--threads",
                    "8",
                    "benchmarks.baselines.noop_flask:app",
                ],
                http_ok(f"http://127.0.0.1:{noop_port}/healthz"),
                env=env,
                cwd=REPO_ROOT,
                ports=[("127.0.0.1", noop_port)],
                start_timeout_s=60,
            ),
            label="do-nothing Flask (baseline)",
        )
        servers = {OURS: s.collector_url, SEED: f"http://127.0.0.1:{seed_port}", NOOP: f"http://127.0.0.1:{noop_port}"}
        runs: dict[tuple[str, str], list[dict]] = {}

        def measure(name: str, what: str, *args) -> None:
            with downstream_paused(ctx) if name == OURS else contextlib.nullcontext():
                runs.setdefault((name, what), []).append(ab(ctx, servers[name] + args[0], *args[1:]))

        # Rounds alternate between the servers, so that a slow spell of the shared machine falls on
        # all of them; each figure is the round with the median rate.
        for c in (1, 16):
            for r in range(ctx.size.ab_rounds):
                for name in (SEED, NOOP, OURS):
                    ctx.say(f"collector: ab -c {c} GET /purchase_a_sword against the {name} (round {r + 1})")
                    measure(name, f"c{c}", "/purchase_a_sword", c, ctx.size.ab_requests)
        batch = ctx.home / "collector" / "batch-100.json"
        batch.write_text(json.dumps(bodies(load_types(load_catalog(s.catalog)), 100)))
        for r in range(ctx.size.ab_rounds):
            for name in (NOOP, OURS):
                ctx.say(f"collector: ab -c 4 POST /events (batches of 100) against the {name} (round {r + 1})")
                measure(name, "post", "/events", 4, ctx.size.post_requests, str(batch))
        results = {k: median_run(v) for k, v in runs.items()}
        if ctx.size.ab_rounds > 1:
            for what in ("c1", "c16", "post"):
                rates = "; ".join(
                    f"{name} {', '.join(num(r['rps']) for r in runs[(name, what)])}"
                    for name in (SEED, NOOP, OURS)
                    if (name, what) in runs
                )
                ctx.notes.append(f"collector: {what} req/s of each round: {rates}")
    finally:
        procs.stop_all()

    for c in (1, 16):
        ours = results[(OURS, f"c{c}")]
        for name in (SEED, NOOP):
            base = results[(name, f"c{c}")]
            ctx.add(
                "collector",
                f"GET /purchase_a_sword, ab -c {c}",
                cell(ours),
                f"{name}: {cell(base)}",
                ratio(ours["rps"], base["rps"]),
            )
            ctx.figure(
                "throughput",
                {
                    "stage": "collector",
                    "measure": f"GET, {c} client{'s' if c > 1 else ''}",
                    "unit": "requests/s",
                    "ours": ours["rps"],
                    "baseline": base["rps"],
                    "baseline_name": name,
                },
            )
    ours, base = results[(OURS, "post")], results[(NOOP, "post")]
    ctx.add(
        "collector",
        "POST /events, batches of 100, ab -c 4",
        cell(ours, "events/s", 100),
        f"{NOOP}: {cell(base, 'events/s', 100)}",
        ratio(ours["rps"], base["rps"]),
    )
    ctx.figure(
        "throughput",
        {
            "stage": "collector",
            "measure": "POST batches of 100, 4 clients",
            "unit": "events/s",
            "ours": ours["rps"] * 100,
            "baseline": base["rps"] * 100,
            "baseline_name": NOOP,
        },
    )
