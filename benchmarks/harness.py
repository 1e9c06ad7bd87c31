"""One bench run: start the pipeline (or use the caller's), run the cases, sample memory
throughout, write the table and the plots."""

from __future__ import annotations

import json
import os
import platform
import shutil
import time
import traceback
from dataclasses import asdict
from datetime import UTC, datetime
from functools import partial
from pathlib import Path

import requests

from benchmarks import report
from benchmarks.context import SIZES, Context
from benchmarks.kafka_util import Offsets
from benchmarks.lag import settle
from benchmarks.rss import RssSampler
from benchmarks.stack import BENCH_HOME, PORT_SHIFT, bench_settings, fresh_dir, stop_leftovers, wait_until
from ops.stack import services
from ops.stack.runner import Pipeline, stop_all
from questlog.catalog import DEPLOYED_CATALOG, load_catalog
from questlog.sql import execute

CASES = ("start", "collector", "client", "router", "sink", "e2e", "compaction")
# The longest each case takes at full size on a busy 2-core machine (its caps included), and what
# stopping the pipeline takes: a case is run only if it fits in what is left of the budget.
WORST_S = {"collector": 80, "client": 60, "router": 420, "sink": 330, "e2e": 240, "compaction": 300, "stop": 40}
# each case's rows name it as report.CASE_ROWS says (the docs' bench blocks use the same names)
NAMES = report.CASE_ROWS


def machine() -> str:
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return (
        f"{platform.system()} {platform.machine()}, {os.cpu_count()} cores, {mem:.1f} GiB RAM, "
        f"Python {platform.python_version()}"
    )


def first_answer(ctx: Context, cap_s: float = 60.0) -> tuple[float | None, float | None]:
    """Seconds until Trino first answers a query on an events table, and until an event sent now
    is queryable."""
    s = ctx.settings
    table = load_catalog(s.catalog).types["default"].table
    started = time.monotonic()

    def answered():
        try:
            execute(s, f'SELECT count(*) FROM "{table}"')
            return True
        except Exception:
            return False

    query_s = time.monotonic() - started if wait_until(answered, cap_s, 0.1) else None
    marker = f"start-{ctx.run}"
    sent = time.monotonic()
    response = requests.post(
        f"{s.collector_url}/events", json={"event_type": "default", "event_id": marker}, timeout=30
    )
    if response.status_code != 202:
        return query_s, None
    landed = wait_until(
        lambda: execute(s, f"SELECT count(*) FROM \"{table}\" WHERE event_id = '{marker}'")[1][0][0], cap_s, 0.25
    )
    return query_s, (time.monotonic() - sent if landed else None)


def secs(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.1f} s"


def _case(name: str):
    from benchmarks.cases import client, collector, compaction, e2e, router, sink

    return {
        "collector": collector,
        "client": client,
        "router": router,
        "sink": sink,
        "e2e": e2e,
        "compaction": compaction,
    }[name]


def run(
    cases: list[str],
    size_name: str,
    out_dir: Path,
    pipeline: Pipeline | None = None,
    command: str = "python -m benchmarks",
    page: Path | None = None,
    keep: bool = False,
) -> Path:
    """Run ``cases`` at ``size_name``; with no ``pipeline``, start one in BENCH_HOME (ports shifted
    by PORT_SHIFT) and stop it at the end. Returns the results file."""
    size = SIZES[size_name]
    began = time.monotonic()
    attached = pipeline is not None
    if pipeline is not None:
        settings = pipeline.settings
        home = fresh_dir(settings.home_path / "bench")
    else:
        settings = bench_settings()
        stop_leftovers(BENCH_HOME)
        stop_all(settings)
        shutil.rmtree(BENCH_HOME, ignore_errors=True)
        BENCH_HOME.mkdir(parents=True)
        shutil.copy(DEPLOYED_CATALOG, settings.catalog)
        pipeline = Pipeline(settings)
        home = fresh_dir(BENCH_HOME / "cases")
    rss = RssSampler().start()
    for name in services.STOP_ORDER:
        rss.watch(name, partial(pipeline.supervisor.recorded_pid, name))
    ctx = Context(
        settings,
        pipeline,
        size,
        datetime.now(UTC).strftime("%H%M%S") + os.urandom(2).hex(),
        home,
        rss,
        deadline=began + size.budget_s,
    )
    try:
        if not attached:
            pipeline.fetch()  # downloads, if any, are outside the clock: the start measured is a warm one
            ctx.say(f"starting the pipeline in {settings.home} (ports shifted by {PORT_SHIFT})")
            t0 = time.monotonic()
            rss.phases.append(("start", rss.now(), 0.0))
            pipeline.up()
            up_s = time.monotonic() - t0
            rss.phases[-1] = ("start", rss.phases[-1][1], rss.now())
        if "start" in cases:
            query_s, event_s = first_answer(ctx)
            if attached:
                ctx.add(
                    "start",
                    "pipeline started by the caller: first answered query, first event queryable",
                    f"{secs(query_s)}, {secs(event_s)}",
                )
            else:
                ctx.add(
                    "start",
                    "warm `questlog run` (downloads cached, fresh home), seconds from the start",
                    f"all up {up_s:.1f} s; first answered query {up_s + (query_s or 0):.1f} s; first event "
                    f"sent then queryable {secs(up_s + query_s + event_s if query_s and event_s else None)}",
                )
                ctx.data["start"] = {"up_s": up_s, "query_s": query_s, "event_s": event_s}
        offsets = Offsets(settings.kafka_client())
        try:
            for name in [c for c in CASES if c in cases and c != "start"]:
                if name in ("router", "sink"):  # what the collector case sent is not theirs to compete with
                    skipped = settle(pipeline, offsets, size.settle_cap_s, ctx.say)
                    if skipped:
                        ctx.notes.append(
                            f"{NAMES[name]}: {skipped:,} raw events left by the collector case were "
                            "skipped first (the router was behind)"
                        )
                scale = 1 if size.name == "full" else 0.25
                later = [c for c in CASES if c in cases and CASES.index(c) > CASES.index(name)]
                ctx.reserve_s = sum(WORST_S[c] * scale for c in later) + WORST_S["stop"]
                needed = WORST_S[name] * scale + WORST_S["stop"]
                if ctx.left_s() < needed:
                    ctx.say(f"{name}: skipped, {ctx.left_s():.0f} s left of the budget and it may take {needed:.0f} s")
                    ctx.add(
                        NAMES[name],
                        "SKIPPED",
                        f"not run: {ctx.left_s():.0f} s were left of the "
                        f"{size.budget_s / 60:.0f}-minute budget, {rss.now():.0f} s into the run",
                    )
                    continue
                phase_start = rss.now()
                try:
                    _case(name).run(ctx)
                except Exception as exc:
                    ctx.say(f"{name} failed:\n{traceback.format_exc()}")
                    ctx.add(NAMES[name], "FAILED", f"{type(exc).__name__}: {str(exc)[:300]}")
                rss.phases.append((NAMES[name], phase_start, rss.now()))
        finally:
            offsets.close()
        rss.sample()
        if "start" in cases:
            peaks = rss.peaks()
            stack = ", ".join(
                f"{n} {peaks[n] / 2**20:,.0f}" for n in ("kafka", "namenode", "datanode", "trino") if n in peaks
            )
            apps = ", ".join(f"{n} {peaks[n] / 2**20:,.0f}" for n in ("collector", "router", "sink") if n in peaks)
            ctx.add("start", "peak RSS during the run, pipeline (MiB)", apps)
            ctx.add("start", "peak RSS during the run, stack (MiB)", stack)
    finally:
        rss.stop()
        if not attached and not keep:
            ctx.say("stopping the pipeline")
            pipeline.down()
    took = time.monotonic() - began
    meta = {
        "date": datetime.now(UTC).strftime("%Y-%m-%d %H:%M UTC"),
        "machine": machine(),
        "command": command,
        "size": size.name,
        "cases": [c for c in CASES if c in cases],
        "seconds": took,
    }
    data = {
        "meta": meta,
        "rows": [asdict(r) for r in ctx.rows],
        "notes": ctx.notes,
        **ctx.data,
        "rss": {"series": rss.series, "phases": rss.phases},
    }
    out_dir.mkdir(parents=True, exist_ok=True)
    (out_dir / "latest.json").write_text(json.dumps(data, indent=1))
    text = report.markdown(data, report.plot(data, out_dir))
    (out_dir / "latest.md").write_text(text)
    print(report.table(data))
    if page is not None:
        report.write_performance_page(page, text, out_dir, size.budget_s)
    ctx.say(f"done in {took / 60:.1f} min: {out_dir / 'latest.md'}")
    return out_dir / "latest.md"
