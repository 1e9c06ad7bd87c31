"""Write the compaction case's data: ``--rows`` purchase rows of one date into an Iceberg table of
the pipeline's catalog as ``--files`` small files over ``--commits`` commits (what a day of small
micro-batches leaves), and the same rows as one file into ``<table>_onefile``.

Run: python -m benchmarks.baselines.iceberg_files --schema bench_x --table sword_purchases \
       --date 2001-02-03 --rows 1000000 --files 2000 --commits 20   (QUESTLOG_* variables: the pipeline's)
"""

from __future__ import annotations

import argparse
import json
import time

from pyspark.sql import functions as F

from questlog.catalog import load_catalog
from questlog.settings import Settings
from spark_sink.session import catalog_session
from spark_sink.tables import create_table_sql, qualified
from spark_sink.transform import to_rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--schema", required=True)
    parser.add_argument("--table", default="sword_purchases")
    parser.add_argument("--date", required=True)
    parser.add_argument("--rows", type=int, required=True)
    parser.add_argument("--files", type=int, required=True)
    parser.add_argument("--commits", type=int, required=True)
    args = parser.parse_args()
    settings = Settings.from_env().replace(trino_schema=args.schema)
    catalog = load_catalog(settings.catalog)
    table = next(t for t in catalog.tables(settings.raw_topic, settings.dlq_topic) if t.name == args.table)
    spark = catalog_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.trino_catalog}.{args.schema}")
    one = f"{args.table}_onefile"
    for name in (args.table, one):
        spark.sql(
            create_table_sql(settings, table.__class__(name, table.topic, table.columns, table.time_column, table.key))
        )
    swords = F.array(*[F.lit(s) for s in ("katana", "claymore", "rapier", "scimitar", "gladius")])
    i = F.col("id")
    base = F.to_timestamp(F.lit(args.date + " 00:00:00"))
    rows = spark.range(args.rows).select(
        F.format_string("bench-%09d", i).alias("event_id"),
        F.lit("default").alias("source"),
        F.lit("purchase_sword").alias("event_type"),
        (base + F.make_interval(secs=(i * 86).cast("double") / 1000)).alias("received_at"),
        F.format_string("user-%d", (i * 7919) % 50000).alias("user_id"),
        F.lit(1).cast("bigint").alias("schema_version"),
        F.element_at(swords, (i % 5 + 1).cast("int")).alias("sword_type"),
        (i % 100).cast("double").alias("price"),
        (i % 10).alias("quantity"),
    )
    events = rows.select(F.lit(table.topic).alias("topic"), F.to_json(F.struct("*")).cast("binary").alias("value"))
    data = to_rows(events, table).cache()
    data.count()
    started = time.time()
    per_commit = args.rows // args.commits
    for c in range(args.commits):
        part = data.where(F.split("event_id", "-")[1].cast("long") >= c * per_commit).where(
            F.split("event_id", "-")[1].cast("long") < (c + 1) * per_commit
        )
        part.repartition(args.files // args.commits).writeTo(qualified(settings, args.table)).append()
    small_s = time.time() - started
    data.coalesce(1).writeTo(qualified(settings, one)).append()
    print(json.dumps({"event": "written", "small_s": small_s}), flush=True)
    spark.stop()


if __name__ == "__main__":
    main()
