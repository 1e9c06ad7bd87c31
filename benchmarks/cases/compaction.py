"""Compaction: 1,000,000 events of one date as 2,000 small files over 20 commits (what a day of
small micro-batches leaves) in an Iceberg table of the pipeline's catalog, Trino queries on them
before and after `questlog compact` (Iceberg's optimize through Trino), beside the same rows
written as one file from the start (a table of its own), in one run.

The tables are written by one Spark job (benchmarks/baselines/iceberg_files.py) in a schema of the
case's own: landing a million rows through the sink 2,000 times would take the case's whole budget
and measure the sink. Each query is run once to warm up, then timed as the best of 3.
"""

from __future__ import annotations

import sys
import time

from benchmarks.context import Context, num
from benchmarks.stack import Processes, read_json_lines, wait_until
from compactor.compact import Compactor
from ops.stack import services
from ops.stack.process import Service
from questlog.settings import REPO_ROOT
from questlog.sql import execute

DATE = "2001-02-03"
TABLE = "sword_purchases"
QUERIES = (
    ("count(*)", "SELECT count(*) FROM {t} WHERE dt = '{d}'"),
    ("count(distinct user_id)", "SELECT count(DISTINCT user_id) FROM {t} WHERE dt = '{d}'"),
    (
        "filter on a field (sword_type, price)",
        "SELECT count(*), sum(quantity) FROM {t} WHERE dt = '{d}' AND sword_type = 'katana' AND price > 90",
    ),
)


def best_of(settings, sql: str, n: int = 3) -> tuple[float, list]:
    result = execute(settings, sql)[1]  # warm-up
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        execute(settings, sql)
        times.append(time.monotonic() - t0)
    return min(times), result


def data_files(settings, table: str) -> tuple[int, int]:
    files, size = execute(settings, f'SELECT count(*), coalesce(sum(file_size_in_bytes), 0) FROM "{table}$files"')[1][0]
    return int(files), int(size)


def run(ctx: Context) -> None:
    try:
        measure(ctx)
    finally:  # the pipeline's own compactor again, as it was
        if ctx.pipeline.supervisor.running_pid("compactor") is None:
            ctx.pipeline.supervisor.start(services.compactor(ctx.pipeline.settings))


def measure(ctx: Context) -> None:
    events, files, commits = (1_000_000, 2_000, 20) if ctx.size.name == "full" else (20_000, 40, 4)
    s = ctx.settings.replace(trino_schema=f"bench_{ctx.run}_compaction")
    one = TABLE + "_onefile"
    # the compactor service looks at the pipeline's own schema only; stopped anyway, so that what is
    # timed is `questlog compact` (Compactor.run) and nothing else
    ctx.pipeline.supervisor.stop("compactor")
    ctx.say(f"compaction: writing {events:,} rows of {TABLE} dt={DATE} as {files:,} files in {commits} commits")
    procs = Processes(ctx.home / "compaction", ctx.rss)
    name = "iceberg-files"
    argv = [sys.executable, "-m", "benchmarks.baselines.iceberg_files", "--schema", s.trino_schema]
    argv += ["--table", TABLE, "--date", DATE, "--rows", str(events), "--files", str(files)]
    argv += ["--commits", str(commits)]
    log = procs.log(name)
    try:
        procs.start(
            Service(name, argv, lambda: True, env=services.sink(s).env, cwd=REPO_ROOT, start_timeout_s=30),
            wait=False,
        )
        proc = procs.supervisor.procs[name]
        wait_until(lambda: proc.poll() is not None, max(60.0, ctx.left_s() - 120), 1.0)
    finally:
        procs.stop_all()
    written = {e["event"]: e for e in read_json_lines(log)}
    if "written" not in written:
        raise RuntimeError(f"the compaction case's tables were not written; see {log}")
    ctx.say(f"compaction: written in {written['written']['small_s']:.0f} s")
    before_files, small_bytes = data_files(s, TABLE)
    one_files, one_bytes = data_files(s, one)

    before = {name: best_of(s, sql.format(t=f'"{TABLE}"', d=DATE)) for name, sql in QUERIES}
    t0 = time.monotonic()
    reports = Compactor(s).run([TABLE], [DATE])
    compact_s = time.monotonic() - t0
    after_files, after_bytes = data_files(s, TABLE)
    after = {name: best_of(s, sql.format(t=f'"{TABLE}"', d=DATE)) for name, sql in QUERIES}
    single = {name: best_of(s, sql.format(t=f'"{one}"', d=DATE)) for name, sql in QUERIES}
    for name in before:
        if not (before[name][1] == after[name][1] == single[name][1]):
            raise AssertionError(f"{name}: different answers: {before[name][1]}, {after[name][1]}, {single[name][1]}")
    done = [r for r in reports if r.done]
    ctx.add(
        "compaction",
        f"{num(events)} rows in one date: data files and bytes before, after `questlog compact`",
        f"{num(before_files)} files, {small_bytes / 2**20:,.1f} MiB -> {after_files} file(s), "
        f"{after_bytes / 2**20:,.1f} MiB (compacted in {compact_s:.1f} s)",
        f"the same rows written as one file: {one_files} file, {one_bytes / 2**20:,.1f} MiB",
    )
    if not done:
        ctx.notes.append("compaction: the partition was not compacted")
    for name, _ in QUERIES:
        b, a, o = before[name][0], after[name][0], single[name][0]
        ctx.add(
            "compaction",
            f"Trino {name}, best of 3: before -> after compaction",
            f"{b * 1000:,.0f} ms -> {a * 1000:,.0f} ms ({b / a:.1f}x faster)",
            f"one file from the start: {o * 1000:,.0f} ms",
            f"{o / a:.2f}x",
        )
    ctx.figure(
        "compaction",
        {
            "events": events,
            "files_before": before_files,
            "bytes_before": small_bytes,
            "files_after": after_files,
            "bytes_after": after_bytes,
            "compact_s": compact_s,
            "queries": {
                n: {"before_s": before[n][0], "after_s": after[n][0], "one_file_s": single[n][0]} for n, _ in QUERIES
            },
        },
    )
