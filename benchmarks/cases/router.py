"""Router: Questlog's router as a black box (`faust -A faust_app.app worker -l info`, started as
the runner starts it, with QUESTLOG_* overrides naming fresh topics, group and web port) beside two
baselines draining the same backlog of raw records: a do-nothing Faust agent (every message
forwarded with ``await topic.send``, Faust's default acking) and a plain aiokafka passthrough.

The backlog is raw records exactly as the collector writes them (`producer.envelope.to_records`):
"client batches" are POST /events requests of 100 to 500 events, one record each; "GET" is the
seed's single-event requests, one event a record. Records go round-robin over the partitions.

Each measurement: start the workers and wait until their group holds the raw topic; produce the
backlog; the clock runs from the first produced record until the group's committed offsets reach
the end offsets (or the time cap, and then the events of what was committed by then count).
"""

from __future__ import annotations

import sys
import time
from itertools import accumulate

import orjson

from benchmarks.context import Context, num, ratio
from benchmarks.events import CONTEXT, body, load_types
from benchmarks.kafka_util import Offsets, admin_env, create_topics, produce
from benchmarks.stack import Processes, free_port, group_ready, renamed
from ops.stack import kafka_security, services
from ops.stack.process import Service
from producer.envelope import build_envelope, to_records, utc_now
from questlog.catalog import load_catalog
from questlog.kafka_admin import ensure_pipeline_topics
from questlog.settings import REPO_ROOT

# Client batches cycle through these sizes (events per POST /events request).
BATCH_SIZES = (100, 200, 300, 400, 500)
BASELINES = {"faust": "do-nothing Faust agent", "passthrough": "aiokafka passthrough"}
HALF_INVALID = ", half invalid"


class Backlog:
    """The raw records of one input, each with its partition, and how many events each holds."""

    def __init__(self, ctx: Context, topic: str, what: str, n: int, partitions: int) -> None:
        catalog = load_catalog(ctx.settings.catalog)
        types, now = load_types(catalog), utc_now()
        invalid_every = 2 if what.endswith(HALF_INVALID) else 0
        per_request = [1] if what.startswith("GET") else list(BATCH_SIZES)
        self.records: list[tuple[str, bytes | None, bytes, int]] = []
        self.events: dict[int, list[int]] = {p: [] for p in range(partitions)}  # per partition, per record
        i = k = 0
        while i < n:
            size = min(per_request[k % len(per_request)], n - i)
            events = [
                build_envelope(
                    body(types[j % len(types)], j, bool(invalid_every) and j % 2 == 1), catalog, CONTEXT, now
                )
                for j in range(i, i + size)
            ]
            for key, value in to_records(events, ctx.settings.max_body_bytes):
                partition = len(self.records) % partitions
                decoded = orjson.loads(value)
                self.records.append((topic, key, value, partition))
                self.events[partition].append(len(decoded) if isinstance(decoded, list) else 1)
            i, k = i + size, k + 1
        self.total = n
        self.prefix = {p: [0, *accumulate(counts)] for p, counts in self.events.items()}

    def events_done(self, committed: dict[int, int]) -> int:
        """Events in the records below each partition's committed offset."""
        return sum(self.prefix[p][min(o, len(self.prefix[p]) - 1)] for p, o in committed.items())


def drain(ctx: Context, offsets: Offsets, group: str, backlog: Backlog, cap_s: float) -> dict:
    """Produce ``backlog`` and time until ``group`` has committed it all."""
    ends = {p: len(c) for p, c in backlog.events.items()}
    started = time.monotonic()
    produce(ctx.settings.kafka_client(), backlog.records)
    produced_s = time.monotonic() - started
    while True:
        committed = offsets.committed(group, backlog.records[0][0])
        elapsed = time.monotonic() - started
        if all(committed.get(p, 0) >= end for p, end in ends.items()) or elapsed >= cap_s:
            break
        time.sleep(0.1)
    done = backlog.events_done(committed)
    return {
        "events": done,
        "records": sum(committed.values()),
        "seconds": elapsed,
        "rate": done / elapsed if elapsed else None,
        "capped": done < backlog.total,
        "total": backlog.total,
        "produce_s": produced_s,
    }


def ours(ctx: Context, raw: str, group: str, home, port: int = 0, sessions: bool = True):
    """The settings of our router on the bench's topics and group."""
    return ctx.settings.replace(
        home=str(home),
        raw_topic=raw,
        dlq_topic=raw + ".dlq",
        router_id=group,
        kafka_password_file=str(ctx.settings.kafka_password_path),  # the bench stack's Kafka users
        router_web_port=port or ctx.settings.router_web_port,
        topic_partitions=ctx.size.router_partitions,
        sessions=int(sessions),
    )


def worker(ctx: Context, kind: str, raw: str, group: str, home, w: int, sessions: bool = True) -> Service:
    s = ctx.settings
    port = free_port(s.router_web_port + 1, ctx.ports)
    if kind == "ours":
        settings = ours(ctx, raw, group, home, port, sessions)
        kafka_security.grant(settings)  # the router's user may read and write the bench's topics
        return renamed(services.router(settings), f"router-{w}")
    if kind == "faust":
        argv = [str(services.BIN / "faust"), "-A", "benchmarks.baselines.faust_noop", "worker", "-l", "info"]
        env = {"BENCH_KAFKA": s.kafka_bootstrap, "BENCH_TOPIC": raw, "BENCH_OUT": raw + ".out", **admin_env(s)}
        env |= {"BENCH_GROUP": group, "BENCH_WEB_PORT": str(port), "BENCH_DATADIR": str(home / f"faust-{w}")}
    else:
        argv = [sys.executable, "-m", "benchmarks.baselines.passthrough_router", "--kafka", s.kafka_bootstrap]
        argv += ["--topic", raw, "--out", raw + ".out", "--group", group]
        env = admin_env(s)
    env |= {"PYTHONPATH": str(REPO_ROOT), "PYTHONUNBUFFERED": "1"}
    return Service(f"{kind}-{w}", argv, lambda: True, env=env, cwd=REPO_ROOT)


def measure(ctx: Context, offsets: Offsets, kind: str, what: str, workers: int, k: int, sessions: bool = True) -> dict:
    s, size = ctx.settings, ctx.size
    raw = f"bench.{ctx.run}.router{k}"
    group = f"bench-{ctx.run}-{kind}{k}"
    create_topics(s.kafka_client(), [raw, raw + ".out"], size.router_partitions)
    home = ctx.home / f"router{k}-{kind}"
    variant = ours(ctx, raw, group, home, sessions=sessions)
    if kind == "ours":
        # As the stack does before the router starts (questlog.kafka_admin), as the admin: the
        # typed topics, the dead letters and (sessions on) the router's own. The router's user may
        # not create topics: without them it retried the dead letters' creation, routing nothing.
        ensure_pipeline_topics(variant, load_catalog(variant.catalog))
    procs = Processes(home, ctx.rss)
    name = "router (Questlog, router case" if kind == "ours" else f"{BASELINES[kind]} (baseline"
    if kind == "ours" and not sessions:
        name += ", sessions off"
    label = f"{name}, {what}, {workers} worker{'s' if workers > 1 else ''})"
    events = size.router_events if what.startswith("GET") else size.router_batch_events
    backlog = Backlog(ctx, raw, what, events, size.router_partitions)  # before the clock
    try:
        booted = time.monotonic()
        for w in range(workers):
            svc = worker(ctx, kind, raw, group, home, w, sessions)
            procs.start(svc, label=f"{label} #{w + 1}" if workers > 1 else label, wait=False)
        ready = group_ready(s.kafka_client(), group, raw, members=workers)
        for name in procs.names:  # all in the group, and none has exited
            procs.supervisor.wait_healthy(Service(name, [], ready, start_timeout_s=120))
        boot_s = time.monotonic() - booted
        result = drain(ctx, offsets, group, backlog, size.router_cap_s)
        if kind == "ours" and sessions:  # how far agent `sessions` was behind as the raw drain ended
            result["activity_behind"] = offsets.lag(group, variant.activity_topic)
        peaks = [ctx.rss.peak(f"{label} #{w + 1}" if workers > 1 else label) for w in range(workers)]
        result.update(boot_s=boot_s, rss=max((p for p in peaks if p), default=None))
        return result
    finally:
        procs.stop_all()


def cell(r: dict) -> str:
    capped = f", cap: {r['events']:,} in {r['seconds']:.0f} s" if r["capped"] else ""
    rss = f", peak RSS {r['rss'] / 2**20:,.0f} MiB" if r.get("rss") else ""
    return f"{num(r['rate'])} events/s{capped}{rss}"


def run(ctx: Context) -> None:
    offsets = Offsets(ctx.settings.kafka_client())
    k = 0
    try:
        # per (input, workers): the baselines read no event, so a half-invalid backlog shares the valid one's
        baselines: dict[tuple[str, int], dict[str, dict]] = {}
        for what, workers in ctx.size.router_variants:
            plural = "s" if workers > 1 else ""
            shape = (what.removesuffix(HALF_INVALID), workers)
            if shape not in baselines:
                baselines[shape] = {}
                for kind in BASELINES:
                    ctx.say(f"router: {BASELINES[kind]}, {shape[0]}, {workers} worker{plural}")
                    baselines[shape][kind] = measure(ctx, offsets, kind, shape[0], workers, k)
                    k += 1
            ctx.say(f"router: ours, {what}, {workers} worker{plural}")
            ours = measure(ctx, offsets, "ours", what, workers, k)
            k += 1
            faust, passthrough = baselines[shape]["faust"], baselines[shape]["passthrough"]
            same = "" if shape[0] == what else f" (on the {shape[0]} backlog: they read no event)"
            ctx.add(
                "router",
                f"drain {ours['total']:,} events as {what} ({workers} worker{plural}, "
                f"{ctx.size.router_partitions} partitions)",
                cell(ours),
                f"{BASELINES['faust']}{same}: {cell(faust)}; {BASELINES['passthrough']}: {cell(passthrough)} "
                f"({ratio(ours['rate'], passthrough['rate'])} of it)",
                ratio(ours["rate"], faust["rate"]),
            )
            ctx.figure(
                "throughput",
                {
                    "stage": "router",
                    "measure": f"{what}, {workers} worker{plural}",
                    "unit": "events/s",
                    "ours": ours["rate"],
                    "baseline": faust["rate"],
                    "baseline_name": BASELINES["faust"],
                },
            )
            ctx.data.setdefault("router_runs", []).append(
                {"input": what, "workers": workers, "ours": ours, **baselines[shape]}
            )
        sessions_cost(ctx, offsets, k)
        scaling(ctx)
    finally:
        offsets.close()


def sessions_cost(ctx: Context, offsets: Offsets, k: int) -> None:
    """The router with agent ``sessions`` (QUESTLOG_SESSIONS=1, the default, measured above) beside
    the same router with it off, on the same input: the issue's budget is 10% of events/s."""
    runs = ctx.data.get("router_runs", [])
    picked = [r for r in runs if r["workers"] == 1 and not r["input"].endswith(HALF_INVALID)] or runs[:1]
    for run in picked:
        what, workers = run["input"], run["workers"]
        plural = "s" if workers > 1 else ""
        ctx.say(f"router: ours with sessions off, {what}, {workers} worker{plural}")
        off = measure(ctx, offsets, "ours", what, workers, k, sessions=False)
        k += 1
        on = run["ours"]
        behind = on.get("activity_behind")
        ctx.add(
            "router",
            f"sessions agent on beside off, {what} ({workers} worker{plural})",
            f"{cell(on)}; agent `sessions` {num(behind)} activity records behind as the drain ended",
            f"sessions off: {cell(off)}",
            ratio(on["rate"], off["rate"]),
        )
        run["sessions_off"] = off


def scaling(ctx: Context) -> None:
    """Two workers beside one, for the router and for the do-nothing Faust agent, on the same input."""
    runs = {(r["input"], r["workers"]): r for r in ctx.data.get("router_runs", [])}
    for (what, workers), two in runs.items():
        one = runs.get((what, 1))
        if workers != 2 or one is None:
            continue
        ctx.add(
            "router",
            f"2 workers beside 1, {what} ({ctx.size.router_partitions} partitions)",
            f"{ratio(two['ours']['rate'], one['ours']['rate'])} ({cell(two['ours'])} vs {cell(one['ours'])})",
            f"{BASELINES['faust']}: {ratio(two['faust']['rate'], one['faust']['rate'])}",
        )
