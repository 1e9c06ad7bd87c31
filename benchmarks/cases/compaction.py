"""Compaction: 1,000,000 events of one date as 2,000 small files (what a day of 5 s micro-batches
leaves), Trino queries on them before and after `questlog compact`, beside the same rows written
as one file from the start (a table of its own over the same columns), in one run.

The small files are written with pyarrow over WebHDFS, named as files of an older sink checkpoint
(so every one may be merged), and the partition registered as the sink registers it: landing a
million rows through Spark 2,000 times would take the case's whole budget and measure the sink.
Each query is run once to warm up, then timed as the best of 3.
"""

from __future__ import annotations

import dataclasses
import datetime
import io
import time
from concurrent.futures import ThreadPoolExecutor

from benchmarks.context import Context, num
from questlog.catalog import PARTITION_COLUMN, load_catalog
from questlog.compact import Compactor
from questlog.sql import execute
from spark_sink.registry import TrinoRegistry, create_table_sql

DATE = "2001-02-03"  # a run on a pipeline that has it already (--attach) takes the next free date
QUERIES = (
    ("count(*)", "SELECT count(*) FROM {t} WHERE dt = '{d}'"),
    ("count(distinct user_id)", "SELECT count(DISTINCT user_id) FROM {t} WHERE dt = '{d}'"),
    (
        "filter on a field (sword_type, price)",
        "SELECT count(*), sum(quantity) FROM {t} WHERE dt = '{d}' AND sword_type = 'katana' AND price > 90",
    ),
)


def rows(table, start: int, n: int):
    import pyarrow as pa

    swords = ["katana", "claymore", "rapier", "scimitar", "gladius"]
    base = int(datetime.datetime.fromisoformat(DATE + "T00:00:00+00:00").timestamp()) * 1_000_000
    data = {}
    for c in table.columns:
        if c.name == "event_id":
            data[c.name] = pa.array([f"bench-{i:09d}" for i in range(start, start + n)])
        elif c.name == "user_id":
            data[c.name] = pa.array([f"user-{(i * 7919) % 50_000}" for i in range(start, start + n)])
        elif c.name == "sword_type":
            data[c.name] = pa.array([swords[i % 5] for i in range(start, start + n)])
        elif c.name == "price":
            data[c.name] = pa.array([float(i % 100) for i in range(start, start + n)])
        elif c.type == "timestamp":
            data[c.name] = pa.array([base + i * 86_000 for i in range(start, start + n)], pa.timestamp("us", tz="UTC"))
        elif c.type == "long":
            data[c.name] = pa.array([i % 10 for i in range(start, start + n)], pa.int64())
        elif c.type == "double":
            data[c.name] = pa.array([i / 3 for i in range(start, start + n)], pa.float64())
        elif c.type == "boolean":
            data[c.name] = pa.array([i % 2 == 0 for i in range(start, start + n)])
        else:
            data[c.name] = pa.array([f"{c.name}-{i % 100}" for i in range(start, start + n)])
    return pa.table(data)


def parquet(table) -> bytes:
    import pyarrow.parquet as pq

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="snappy", coerce_timestamps="us")
    return buf.getvalue()


def best_of(settings, sql: str, n: int = 3) -> tuple[float, list]:
    result = execute(settings, sql)[1]  # warm-up
    times = []
    for _ in range(n):
        t0 = time.monotonic()
        execute(settings, sql)
        times.append(time.monotonic() - t0)
    return min(times), result


def run(ctx: Context) -> None:
    s = ctx.settings
    events, files = (1_000_000, 2_000) if ctx.size.name == "full" else (20_000, 40)
    catalog = load_catalog(s.catalog)
    name = catalog.types["purchase_sword"].table
    table = next(t for t in catalog.tables(s.raw_topic, s.dlq_topic) if t.name == name)
    one = table.name + "_onefile"
    compactor = Compactor(s)
    fs = compactor.fs
    registry = TrinoRegistry(s)
    global DATE
    day = datetime.date.fromisoformat(DATE)
    while compactor.partition_meta(table.name, day.isoformat()) is not None:
        day += datetime.timedelta(days=1)
    DATE = day.isoformat()

    # the compactor service would compact this closed day by itself as soon as it is registered:
    # stopped, so that what is timed is `questlog compact` (Compactor.run) and nothing else
    ctx.pipeline.supervisor.stop("compactor")
    ctx.say(f"compaction: writing {events:,} rows of {table.name} dt={DATE} as {files:,} files")
    per = events // files
    t0 = time.monotonic()

    def write(k: int) -> int:
        data = parquet(rows(table, k * per, per))
        fs.write(
            f"{compactor.table_dir(table.name)}/{PARTITION_COLUMN}={DATE}/part-be0c0000-b{k:012d}-0000.parquet", data
        )
        return len(data)

    with ThreadPoolExecutor(max_workers=8) as pool:
        small_bytes = sum(pool.map(write, range(files)))
    ctx.say(f"compaction: written in {time.monotonic() - t0:.0f} s")
    registry.register_partitions(table.name, [DATE])
    # the same rows as one file, in a table of their own
    registry._execute(create_table_sql(s, dataclasses.replace(table, name=one)))
    one_data = parquet(rows(table, 0, per * files))
    fs.write(f"{compactor.table_dir(one)}/{PARTITION_COLUMN}={DATE}/one.parquet", one_data, overwrite=True)
    registry.register_partitions(one, [DATE])

    before = {name: best_of(s, sql.format(t=f'"{table.name}"', d=DATE)) for name, sql in QUERIES}
    t0 = time.monotonic()
    reports = compactor.run([table.name], [DATE])
    compact_s = time.monotonic() - t0
    meta = compactor.partition_meta(table.name, DATE)
    assert meta is not None  # registered above
    after_files = compactor.files(meta["externalLocation"])
    after = {name: best_of(s, sql.format(t=f'"{table.name}"', d=DATE)) for name, sql in QUERIES}
    single = {name: best_of(s, sql.format(t=f'"{one}"', d=DATE)) for name, sql in QUERIES}
    for name in before:
        if not (before[name][1] == after[name][1] == single[name][1]):
            raise AssertionError(f"{name}: different answers: {before[name][1]}, {after[name][1]}, {single[name][1]}")
    done = [r for r in reports if r.done]
    ctx.add(
        "compaction",
        f"{num(events)} rows in one date: files and bytes before, after `questlog compact`",
        f"{num(files)} files, {small_bytes / 2**20:,.1f} MiB -> {len(after_files)} file(s), "
        f"{sum(f.size for f in after_files) / 2**20:,.1f} MiB (compacted in {compact_s:.1f} s)",
        f"the same rows written as one file: 1 file, {len(one_data) / 2**20:,.1f} MiB",
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
            "files_before": files,
            "bytes_before": small_bytes,
            "files_after": len(after_files),
            "bytes_after": sum(f.size for f in after_files),
            "compact_s": compact_s,
            "queries": {
                n: {"before_s": before[n][0], "after_s": after[n][0], "one_file_s": single[n][0]} for n, _ in QUERIES
            },
        },
    )
