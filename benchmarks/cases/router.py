"""Router: Questlog's router as a black box (`faust -A faust_app.app worker -l info`, started as
the runner starts it, with QUESTLOG_* overrides naming fresh topics, group and web port) against a
plain aiokafka passthrough, both draining the same backlog of raw envelopes.

Each measurement: start the workers and wait until their group holds the raw topic; produce N raw
events; the clock runs from the first produced event until the group's committed offsets reach
the end offsets (or the time cap, and then what was committed by then counts).
"""

from __future__ import annotations

import sys
import time

from benchmarks.context import Context, num, ratio
from benchmarks.events import raw_records
from benchmarks.kafka_util import Offsets, create_topics, produce
from benchmarks.stack import Processes, free_port, group_ready, renamed
from questlog.catalog import load_catalog
from questlog.settings import REPO_ROOT
from questlog.stack import services
from questlog.stack.process import Service

PARTITIONS = 2  # so that two workers can share the raw topic; the same for every measurement


def drain(ctx: Context, offsets: Offsets, group: str, topic: str, n: int, cap_s: float, invalid_every: int) -> dict:
    """Produce ``n`` raw events into ``topic`` and time until ``group`` has committed them all."""
    catalog = load_catalog(ctx.settings.catalog)
    records = raw_records(catalog, topic, n, invalid_every, ctx.settings.max_body_bytes)  # before the clock
    started = time.monotonic()
    produce(ctx.settings.kafka_bootstrap, records)
    produced_s = time.monotonic() - started
    done, elapsed = 0, 0.0
    while True:
        done = offsets.committed_total(group, topic)
        elapsed = time.monotonic() - started
        if done >= n or elapsed >= cap_s:
            break
        time.sleep(0.1)
    return {
        "events": done,
        "seconds": elapsed,
        "rate": done / elapsed if elapsed else None,
        "capped": done < n,
        "produce_s": produced_s,
    }


def measure(ctx: Context, offsets: Offsets, kind: str, invalid: bool, workers: int, k: int) -> dict:
    s, size = ctx.settings, ctx.size
    raw = f"bench.{ctx.run}.router{k}"
    group = f"bench-{ctx.run}-{kind}{k}"
    create_topics(s.kafka_bootstrap, [raw], PARTITIONS)
    home = ctx.home / f"router{k}-{kind}"
    procs = Processes(home, ctx.rss)
    label = (
        f"router (Questlog, router case, {workers} worker{'s' if workers > 1 else ''})"
        if kind == "ours"
        else f"passthrough router (baseline, {workers} worker{'s' if workers > 1 else ''})"
    )
    try:
        booted = time.monotonic()
        for w in range(workers):
            if kind == "ours":
                variant = s.replace(
                    home=str(home),
                    raw_topic=raw,
                    dlq_topic=raw + ".dlq",
                    router_id=group,
                    router_web_port=free_port(s.router_web_port + 1, ctx.ports),
                    topic_partitions=PARTITIONS,
                )
                svc = renamed(services.router(variant), f"router-{w}")
            else:
                create_topics(s.kafka_bootstrap, [raw + ".out"], PARTITIONS)
                svc = Service(
                    f"passthrough-{w}",
                    [
                        sys.executable,
                        "-m",
                        "benchmarks.baselines.passthrough_router",
                        "--kafka",
                        s.kafka_bootstrap,
                        "--topic",
                        raw,
                        "--out",
                        raw + ".out",
                        "--group",
                        group,
                    ],
                    lambda: True,
                    env={"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"},
                    cwd=REPO_ROOT,
                )
            procs.start(svc, label=f"{label} #{w + 1}" if workers > 1 else label, wait=False)
        ready = group_ready(s.kafka_bootstrap, group, raw, members=workers)
        for name in procs.names:  # all in the group, and none has exited
            procs.supervisor.wait_healthy(Service(name, [], ready, start_timeout_s=120))
        boot_s = time.monotonic() - booted
        result = drain(ctx, offsets, group, raw, size.router_events, size.router_cap_s, 2 if invalid else 0)
        peaks = [ctx.rss.peak(f"{label} #{w + 1}" if workers > 1 else label) for w in range(workers)]
        result.update(boot_s=boot_s, rss=max((p for p in peaks if p), default=None))
        return result
    finally:
        procs.stop_all()


def run(ctx: Context) -> None:
    offsets = Offsets(ctx.settings.kafka_bootstrap)
    try:
        passthrough: dict[int, tuple[str, dict]] = {}  # per worker count: it reads no event, so one input does
        for k, (what, workers) in enumerate(ctx.size.router_variants):
            invalid = what == "half invalid"
            if workers not in passthrough:
                ctx.say(f"router: passthrough, {what} events, {workers} worker(s), {ctx.size.router_events:,} events")
                passthrough[workers] = (what, measure(ctx, offsets, "passthrough", invalid, workers, k * 2))
            ctx.say(f"router: ours, {what} events, {workers} worker(s), {ctx.size.router_events:,} events")
            ours = measure(ctx, offsets, "ours", invalid, workers, k * 2 + 1)
            base_input, base = passthrough[workers]
            same = "" if base_input == what else f" (on the {base_input} backlog: it reads no event)"

            def cell(r: dict) -> str:
                capped = f", cap: {r['events']:,} in {r['seconds']:.0f} s" if r["capped"] else ""
                rss = f", peak RSS {r['rss'] / 2**20:,.0f} MiB" if r.get("rss") else ""
                return f"{num(r['rate'])} events/s{capped}{rss}"

            label = f"{what} raw events, {workers} worker{'s' if workers > 1 else ''}"
            ctx.add(
                "router",
                f"drain {ctx.size.router_events:,} {label}",
                cell(ours),
                f"aiokafka passthrough{same}: {cell(base)}",
                ratio(ours["rate"], base["rate"]),
            )
            ctx.figure(
                "throughput",
                {
                    "stage": "router",
                    "measure": label,
                    "unit": "events/s",
                    "ours": ours["rate"],
                    "baseline": base["rate"],
                    "baseline_name": "aiokafka passthrough",
                },
            )
    finally:
        offsets.close()
