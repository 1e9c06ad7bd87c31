"""Sink: Questlog's sink (`python -m spark_sink.job`, as the runner starts it, with overrides naming
fresh topics, directories and Iceberg schema) against two minimal Spark jobs, all draining the same
backlog of typed records produced straight into the typed topics: several tables at once, then
(full size) the same number of records in one table alone. The baseline of the ratio is the minimal
job appending to Iceberg tables of the same catalog (same table properties, one commit per table
and batch, no dedupe, no re-run bookkeeping); the minimal job writing plain parquet is reported too.

Ours: from its query's start (the time in its ready file) until its checkpoint has committed every
record (then Trino counts every row). The minimal jobs: from their query's start until their
`availableNow` run has written (and committed) everything. Spark's own start-up (~15-30 s) is
outside every clock and reported beside them.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

import requests

from benchmarks.context import Context, num, ratio
from benchmarks.events import load_types, typed_records
from benchmarks.kafka_util import create_topics, produce
from benchmarks.lag import sink_checkpoint
from benchmarks.stack import Processes, read_json_lines, wait_until
from ops.stack import kafka_security, services
from ops.stack.process import Service
from questlog.catalog import load_catalog
from questlog.settings import REPO_ROOT
from questlog.sql import execute

SINK, MINIMAL, MINIMAL_ICEBERG = (
    "sink (Questlog, sink case)",
    "minimal Spark sink (baseline)",
    "minimal Spark sink into Iceberg (baseline)",
)


def count_rows(settings, tables: list[str]) -> int:
    union = " UNION ALL ".join(f'SELECT count(*) AS c FROM "{t}"' for t in tables)
    return int(execute(settings, f"SELECT sum(c) FROM ({union})")[1][0][0] or 0)


def start_minimal(ctx: Context, procs: Processes, prefix: str, iceberg: bool = False) -> tuple[str, float]:
    s = ctx.settings
    kafka_security.grant(s.replace(raw_topic=prefix))  # as the sink's user: the bench's typed topics
    env = services.sink(s).env  # the same Java, Python and Spark settings (and Kafka user) as the sink
    name = "minimal-iceberg-sink" if iceberg else "minimal-sink"
    argv = [
        sys.executable,
        "-m",
        "benchmarks.baselines.minimal_sink",
        "--kafka",
        s.kafka_bootstrap,
        "--hdfs",
        s.hdfs_url,
        "--root",
        f"/bench/{ctx.run}/{prefix}/minimal",
        "--checkpoint",
        f"/bench/{ctx.run}/{prefix}/{name}-checkpoint",
        "--prefix",
        prefix,
        "--catalog",
        s.catalog,
        "--ivy",
        str(Path(s.cache) / "ivy"),
        "--master",
        s.spark_master,
        *(["--iceberg", f"bench_{ctx.run}_{prefix.rsplit('.', 1)[-1]}_minimal"] if iceberg else []),
    ]
    log = procs.log(name)
    launched = time.time()
    procs.start(
        Service(
            name,
            argv,
            lambda: any(e["event"] == "started" for e in read_json_lines(log)),
            env=env,
            cwd=REPO_ROOT,
            start_timeout_s=300,
        ),
        label=MINIMAL_ICEBERG if iceberg else MINIMAL,
        wait=False,
    )
    return name, launched


def finish_minimal(ctx: Context, procs: Processes, name: str, launched: float, expected: int) -> dict:
    proc = procs.supervisor.procs[name]
    log = procs.log(name)
    wait_until(lambda: proc.poll() is not None, min(ctx.size.sink_cap_s + 120, max(10.0, ctx.left_s() - 60)), 0.5)
    events = {e["event"]: e for e in read_json_lines(log)}
    if "done" not in events or "counted" not in events:
        raise RuntimeError(f"the minimal sink did not finish; see {log}")
    rows = sum(events["counted"]["rows"].values())
    if rows != expected:
        ctx.notes.append(f"sink: the minimal job wrote {rows:,} rows of {expected:,}")
    seconds = events["done"]["t"] - events["started"]["t"]
    return {"rows": rows, "seconds": seconds, "rate": rows / seconds, "startup_s": events["started"]["t"] - launched}


def run_ours(ctx: Context, procs: Processes, prefix: str, expected: int, table_names: list[str]) -> dict:
    s = ctx.settings
    home = ctx.home / f"sink-ours-{prefix.rsplit('.', 1)[-1]}"
    variant = s.replace(
        home=str(home),
        catalog_db_password_file=str(s.catalog_db_password_path),  # the bench stack's catalog
        kafka_password_file=str(s.kafka_password_path),  # and its Kafka users
        trino_ca=s.trino_ca_file or "",  # and its Trino: the CA and the users' passwords
        trino_password_file=str(s.trino_secrets_dir / s.trino_user),
        raw_topic=prefix,
        dlq_topic=prefix + ".dlq",
        warehouse_dir=f"/bench/{ctx.run}/{prefix}/warehouse",
        checkpoint_dir=f"/bench/{ctx.run}/{prefix}/checkpoints",
        trino_schema=f"bench_{ctx.run}_{prefix.rsplit('.', 1)[-1]}",
    )
    kafka_security.grant(variant)  # the sink's user may read the bench's typed topics
    svc = services.sink(variant)
    launched = time.time()
    procs.start(svc, label=SINK)
    started = float((home / "run" / "sink.ready").read_text())
    rows, landed = 0, None
    # the minimal job's bound too, and never past the run's budget (less a minute to stop)
    deadline = time.monotonic() + min(ctx.size.sink_cap_s + 120, max(10.0, ctx.left_s() - 60))
    # Done when the sink's checkpoint has committed every record (it commits a batch only once its
    # rows are moved into place and registered), read over WebHDFS four times a second; then Trino
    # counts the rows, once. Polling Trino itself twice a second would take CPU from the sink that
    # the minimal job, measured alone, never pays.
    while time.monotonic() < deadline:
        asked = time.time()
        try:
            committed = sum(sink_checkpoint(variant).values())
        except (requests.RequestException, ValueError, KeyError):
            committed = 0
        if committed >= expected:
            rows = count_rows(variant, table_names)
            if rows >= expected:
                landed = asked
                break
        time.sleep(0.25)
    if landed is None:
        rows = count_rows(variant, table_names)
    end = landed or time.time()
    return {
        "rows": rows,
        "seconds": end - started,
        "rate": rows / (end - started),
        "capped": landed is None,
        "startup_s": started - launched,
    }


def run(ctx: Context) -> None:
    catalog = load_catalog(ctx.settings.catalog)
    types = load_types(catalog)
    per_type = ctx.size.sink_rows_per_table
    drain(ctx, catalog, "sink", types, per_type, f"{len(types)} tables at once")
    if not ctx.size.sink_side_by_side:  # tiny only proves that both run
        one = "join_guild" if "join_guild" in types else types[0]
        need = 180  # three Spark starts and drains: about 90 s on a quiet machine, twice that when busy
        if ctx.fits(need):
            drain(ctx, catalog, "sink1", [one], per_type * len(types), "one table alone")
        else:
            ctx.add(
                "sink",
                f"drain {per_type * len(types):,} typed records, 1 table: SKIPPED",
                f"not run: {ctx.left_s():.0f} s left of the budget, {ctx.reserve_s:.0f} s of it kept for "
                f"the cases after this one, and this may take {need} s",
            )


def drain(ctx: Context, catalog, name: str, types: list[str], per_type: int, what: str) -> None:
    s = ctx.settings
    prefix = f"bench.{ctx.run}.{name}"
    expected = per_type * len(types)
    table_names = [catalog.types[t].table for t in types]
    create_topics(s.kafka_client(), [t.topic for t in catalog.tables(prefix, prefix + ".dlq")], s.topic_partitions)
    ctx.say(f"sink: producing {expected:,} typed records into {len(types)} topics")
    produce(s.kafka_client(), typed_records(catalog, prefix, per_type, types))
    procs = Processes(ctx.home / name, ctx.rss)
    began = ctx.rss.now()
    try:
        if ctx.size.sink_side_by_side:  # only proves that they run: their figures are not comparable
            ctx.say("sink: the minimal Spark jobs and Questlog's sink drain them side by side")
            minimal = start_minimal(ctx, procs, prefix)
            minimal_iceberg = start_minimal(ctx, procs, prefix, iceberg=True)
            ours = run_ours(ctx, procs, prefix, expected, table_names)
            base = finish_minimal(ctx, procs, *minimal, expected)
            base_iceberg = finish_minimal(ctx, procs, *minimal_iceberg, expected)
            ctx.notes.append("sink: the jobs ran side by side (size tiny): the ratios mean nothing")
        else:
            ctx.say("sink: the minimal Spark job drains them into parquet")
            base = finish_minimal(ctx, procs, *start_minimal(ctx, procs, prefix), expected)
            procs.stop_all()
            ctx.say("sink: the minimal Spark job drains them into Iceberg tables of the same catalog")
            base_iceberg = finish_minimal(ctx, procs, *start_minimal(ctx, procs, prefix, iceberg=True), expected)
            procs.stop_all()
            ctx.say("sink: Questlog's sink drains them")
            ours = run_ours(ctx, procs, prefix, expected, table_names)
    finally:
        procs.stop_all()
    peak = {k: ctx.rss.peak(k, began) for k in (SINK, MINIMAL, MINIMAL_ICEBERG)}

    def cell(r: dict, what: str, rss) -> str:
        capped = ", cap reached" if r.get("capped") else ""
        mem = f", peak RSS {rss / 2**20:,.0f} MiB" if rss else ""
        return (
            f"{num(r['rate'])} rows/s ({r['rows']:,} {what} in {r['seconds']:.1f} s{capped}; "
            f"Spark start {r['startup_s']:.0f} s{mem})"
        )

    tables = f"{len(types)} tables" if len(types) > 1 else "1 table"
    ctx.add(
        "sink",
        f"drain {expected:,} typed records, {tables}",
        cell(ours, "queryable in Trino", peak[SINK]),
        f"minimal Spark job into Iceberg: {cell(base_iceberg, 'committed', peak[MINIMAL_ICEBERG])}",
        ratio(ours["rate"], base_iceberg["rate"]),
    )
    ctx.add(
        "sink",
        f"drain {expected:,} typed records, {tables}",
        cell(ours, "queryable in Trino", peak[SINK]),
        f"minimal Spark job into parquet: {cell(base, 'in parquet', peak[MINIMAL])}",
        ratio(ours["rate"], base["rate"]),
    )
    ctx.figure(
        "throughput",
        {
            "stage": "sink",
            "measure": what,
            "unit": "rows/s",
            "ours": ours["rate"],
            "baseline": base_iceberg["rate"],
            "baseline_name": "minimal Spark job into Iceberg",
        },
    )
