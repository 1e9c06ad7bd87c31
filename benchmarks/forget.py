"""Forgetting one player among 1,000,000 rows over 7 days: which files the erasure rewrites, and how
long it takes (issue 24's target: only the files that held their rows, within 2 minutes).

Against a running stack (`questlog run`, or a test or bench stack: its QUESTLOG_* variables), in a
schema of its own: a Spark job writes 1,000,000 purchase rows of 7 days into ``sword_purchases``
as ``--files`` data files a day (the player's 10 rows in a few of them), then the erasure of
``compactor.erasure.Eraser`` runs on that table (the same code as `questlog forget --now`, without
its wait for the pipeline: these rows came through no topic) and the script prints one JSON line:
files before, files that held the player's rows, files rewritten, seconds, and the other rows'
count before and after.

Run: python -m benchmarks.forget [--rows 1000000] [--days 7] [--files 20]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
import uuid

from questlog.settings import Settings
from questlog.sql import execute

PLAYER = "forget-me-bench"


def write(schema: str, rows: int, days: int, files: int, player_rows: int) -> None:
    """The Spark side (a process of its own): the table, ``rows`` rows, ``files`` files a day."""
    from pyspark.sql import functions as F

    from questlog.catalog import load_catalog
    from spark_sink.session import catalog_session
    from spark_sink.tables import create_table_sql, qualified
    from spark_sink.transform import to_rows

    settings = Settings.from_env().replace(trino_schema=schema)
    table = next(t for t in load_catalog(settings.catalog).tables() if t.name == "sword_purchases")
    spark = catalog_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.trino_catalog}.{schema}")
    spark.sql(create_table_sql(settings, table))
    i = F.col("id")
    per_day = rows // days
    day = (i / per_day).cast("long")
    base = F.to_timestamp(F.lit("2026-11-01 00:00:00"))
    # the player's rows: the first few of day 0 and of the middle day (consecutive ids land in
    # different files of their day: the writer deals rows out to its files in turn)
    mid = (days // 2) * per_day
    theirs = (i < player_rows // 2) | ((i >= mid) & (i < mid + player_rows - player_rows // 2))
    data = spark.range(rows).select(
        F.format_string("bench-%09d", i).alias("event_id"),
        F.lit("default").alias("source"),
        F.lit("purchase_sword").alias("event_type"),
        (base + F.make_interval(days=day.cast("int"), secs=(i % per_day).cast("double") * 86400 / per_day)).alias(
            "received_at"
        ),
        F.when(theirs, F.lit(PLAYER)).otherwise(F.format_string("user-%d", (i * 7919) % 50000)).alias("user_id"),
        F.lit(1).cast("bigint").alias("schema_version"),
        F.lit("katana").alias("sword_type"),
        (i % 100).cast("double").alias("price"),
        (i % 10).alias("quantity"),
    )
    events = data.select(F.lit(table.topic).alias("topic"), F.to_json(F.struct("*")).cast("binary").alias("value"))
    landed = to_rows(events, table)
    for d in range(days):
        landed.where(
            F.col("event_id").between(f"bench-{d * per_day:09d}", f"bench-{(d + 1) * per_day - 1:09d}")
        ).repartition(files).writeTo(qualified(settings, table.name)).append()
    spark.stop()


def measure(args: argparse.Namespace) -> dict:
    from compactor.erasure import Eraser
    from questlog.catalog import load_catalog
    from questlog.privacy import RequestStore

    schema = f"bench_forget_{uuid.uuid4().hex[:8]}"
    base = Settings.from_env()
    settings = base.replace(trino_schema=schema)
    t0 = time.monotonic()
    env = {**os.environ, **base.to_env()}
    cmd = [sys.executable, "-m", "benchmarks.forget", "--write", schema, "--rows", str(args.rows)]
    cmd += ["--days", str(args.days), "--files", str(args.files), "--player-rows", str(args.player_rows)]
    subprocess.run(cmd, env=env, check=True)
    write_s = time.monotonic() - t0
    sql = lambda q: execute(settings, q)[1]  # noqa: E731
    files_before = {r[0] for r in sql('SELECT file_path FROM "sword_purchases$files" WHERE content = 0')}
    holding = {r[0] for r in sql(f"SELECT DISTINCT \"$path\" FROM sword_purchases WHERE user_id = '{PLAYER}'")}
    others_before = sql(f"SELECT count(*) FROM sword_purchases WHERE user_id <> '{PLAYER}'")[0][0]
    table = next(t for t in load_catalog(settings.catalog).tables() if t.name == "sword_purchases")
    store = RequestStore(settings)
    eraser = Eraser(settings, lambda: [table], store=store)
    request, _ = store.record(PLAYER, None)
    t1 = time.monotonic()
    with eraser.lock():
        found = eraser.find([request])
        eraser.erase([request], sorted(found))
    erase_s = time.monotonic() - t1
    store.lift(PLAYER)  # the bench's request must not suppress anyone in the pipeline
    files_after = {r[0] for r in sql('SELECT file_path FROM "sword_purchases$files" WHERE content = 0')}
    result = {
        "rows": args.rows,
        "days": args.days,
        "data_files_before": len(files_before),
        "files_holding_the_player": len(holding),
        "files_rewritten": len(files_before - files_after),
        "rewritten_are_those_holding_them": (files_before - files_after) == holding,
        "new_files": len(files_after - files_before),
        "player_rows_before": sum(n for n, _ in found.values()),
        "player_rows_after": sql(f"SELECT count(*) FROM sword_purchases WHERE user_id = '{PLAYER}'")[0][0],
        "other_rows_before": others_before,
        "other_rows_after": sql(f"SELECT count(*) FROM sword_purchases WHERE user_id <> '{PLAYER}'")[0][0],
        "erase_s": round(erase_s, 1),
        "write_s": round(write_s, 1),
        "schema": schema,
    }
    return result


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--days", type=int, default=7)
    parser.add_argument("--files", type=int, default=20, help="data files a day")
    parser.add_argument("--player-rows", type=int, default=10)
    parser.add_argument("--write", metavar="SCHEMA", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.write:
        write(args.write, args.rows, args.days, args.files, args.player_rows)
        return
    print(json.dumps(measure(args)), flush=True)


if __name__ == "__main__":
    main()
