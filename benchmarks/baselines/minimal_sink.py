"""A minimal Spark Structured Streaming sink: Kafka -> parquet on HDFS (or, with ``--iceberg
SCHEMA``, -> Iceberg tables in the pipeline's own catalog), one `availableNow` run.

Each record is parsed into its table's columns and written, partitioned by date, under
``--root/<table>`` (or appended to ``<catalog>.SCHEMA.<table>``, made with the sink's table
properties, one commit per table and batch): no dedupe, no exactly-once bookkeeping. It drains what
the topics hold and exits, printing one JSON line when its query starts and one when it is done
(with the rows written, read back).

Run: python -m benchmarks.baselines.minimal_sink --kafka 127.0.0.1:29092 --hdfs hdfs://127.0.0.1:28020 \
       --root /bench/minimal --checkpoint /bench/minimal-checkpoint --prefix events --ivy ~/.cache/questlog/ivy
"""

from __future__ import annotations

import argparse
import json
import time

from pyspark.sql import SparkSession
from pyspark.sql import functions as F

from questlog.catalog import load_catalog
from questlog.settings import Settings
from spark_sink.connector import KAFKA_PACKAGE, PACKAGES
from spark_sink.session import attach_catalog, kafka_options
from spark_sink.tables import create_table_sql, qualified
from spark_sink.transform import to_rows


def say(event: str, **fields) -> None:
    print(json.dumps({"event": event, "t": time.time(), **fields}), flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kafka", required=True)
    parser.add_argument("--hdfs", required=True)
    parser.add_argument("--root", required=True, help="HDFS directory for the tables")
    parser.add_argument("--checkpoint", required=True)
    parser.add_argument("--prefix", required=True, help="raw topic: tables are read from <prefix>.<type>")
    parser.add_argument("--catalog", default=None)
    parser.add_argument("--ivy", required=True)
    parser.add_argument("--master", default="local[2]")
    parser.add_argument("--iceberg", default=None, metavar="SCHEMA", help="append to Iceberg tables in this schema")
    args = parser.parse_args()
    settings = Settings.from_env().replace(trino_schema=args.iceberg) if args.iceberg else None

    tables = {t.topic: t for t in load_catalog(args.catalog).tables(args.prefix, args.prefix + ".dlq")}
    spark = (
        SparkSession.builder.master(args.master)
        .appName("minimal-sink")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.hadoop.fs.defaultFS", args.hdfs)
        .config("spark.hadoop.dfs.client.use.datanode.hostname", "true")
        .config("spark.jars.ivy", args.ivy)
        .config("spark.jars.packages", ",".join(PACKAGES) if settings else KAFKA_PACKAGE)
        .getOrCreate()
    )
    spark.sparkContext.setLogLevel("WARN")
    if settings:
        attach_catalog(spark, settings)
        spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.trino_catalog}.{settings.trino_schema}")
        for table in tables.values():
            spark.sql(create_table_sql(settings, table))

    def land(batch, batch_id):
        batch.persist()
        for (topic,) in batch.select("topic").distinct().collect():
            table = tables[topic]
            if settings:
                to_rows(batch, table).writeTo(qualified(settings, table.name)).append()
                continue
            schema = ", ".join(f"`{c.name}` {c.spark_type}" for c in table.columns)
            (
                batch.where(F.col("topic") == topic)
                .select(F.from_json(F.col("value").cast("string"), schema).alias("e"))
                .select("e.*")
                .withColumn("dt", F.date_format(F.col(table.time_column), "yyyy-MM-dd"))
                .write.mode("append")
                .partitionBy("dt")
                .parquet(f"{args.hdfs}{args.root}/{table.name}")
            )
        batch.unpersist()

    query = (
        spark.readStream.format("kafka")
        # the sink's own Kafka user, as the sink (the bench gives it the sink's environment)
        .options(**kafka_options(Settings.from_env().replace(kafka_bootstrap=args.kafka)))
        .option("subscribe", ",".join(sorted(tables)))
        .option("startingOffsets", "earliest")
        .load()
        .writeStream.foreachBatch(land)
        .option("checkpointLocation", f"{args.hdfs}{args.checkpoint}")
        .trigger(availableNow=True)
        .start()
    )
    say("started")
    query.awaitTermination()
    say("done")
    rows = {}
    for table in tables.values():
        if settings:
            rows[table.name] = spark.table(qualified(settings, table.name)).count()
            continue
        try:
            rows[table.name] = spark.read.parquet(f"{args.hdfs}{args.root}/{table.name}").count()
        except Exception:  # a table with no records has no directory
            rows[table.name] = 0
    say("counted", rows=rows)
    spark.stop()


if __name__ == "__main__":
    main()
