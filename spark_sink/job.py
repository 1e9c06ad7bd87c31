"""The streaming sink: typed Kafka topics -> parquet on HDFS -> Trino partitions.

Run: `python -m spark_sink.job` (settings from QUESTLOG_* environment variables).

`main()` only wires extract -> transform -> load: read every table's topic from Kafka, turn each
micro-batch into rows per table (`transform.to_rows`), write them batch-idempotently
(`writer.write_batch`) and register new date partitions in Trino (`registry`). Progress is
checkpointed on HDFS only after a batch is written, so a restart resumes without loss.
"""

from __future__ import annotations

import logging
import signal
import sys
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from questlog.catalog import Table, load_catalog
from questlog.kafka_admin import ensure_topics
from questlog.settings import Settings
from spark_sink.registry import TrinoRegistry
from spark_sink.transform import to_rows
from spark_sink.writer import write_batch

log = logging.getLogger("spark_sink")

KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"


def build_session(settings: Settings, app_name: str = "questlog-sink", packages: bool = True) -> SparkSession:
    builder = (
        SparkSession.builder.master(settings.spark_master).appName(app_name)
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .config("spark.hadoop.fs.defaultFS", settings.hdfs_url)
        .config("spark.hadoop.dfs.client.use.datanode.hostname", "true")
        .config("spark.jars.ivy", str(Path(settings.cache) / "ivy"))
    )
    if packages:
        builder = builder.config("spark.jars.packages", KAFKA_PACKAGE)
    return builder.getOrCreate()


def build_query(spark: SparkSession, settings: Settings, tables: list[Table], registry: TrinoRegistry):
    by_topic = {t.topic: t for t in tables}
    records = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", ",".join(by_topic))
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", 200_000)
        .load()
        .select("topic", "value")
    )

    def land(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        batch.persist()
        try:
            topics = [row.topic for row in batch.select("topic").distinct().collect()]
            counts = []
            for topic in sorted(topics):
                table = by_topic[topic]
                dates = write_batch(spark, to_rows(batch, table), f"{settings.warehouse_url}/{table.name}", batch_id)
                registry.register_partitions(table.name, dates)
                counts.append(table.name)
            if topics:
                log.info("batch %d landed %s in %.1fs", batch_id, ", ".join(counts), time.monotonic() - started)
        finally:
            batch.unpersist()

    return (
        records.writeStream.queryName("questlog-sink")
        .foreachBatch(land)
        .option("checkpointLocation", f"{settings.checkpoint_url}/sink")
        .trigger(processingTime=f"{settings.sink_trigger_s} seconds")
        .start()
    )


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    tables = load_catalog().tables(settings.raw_topic, settings.dlq_topic)
    ensure_topics(settings.kafka_bootstrap, [t.topic for t in tables], settings.topic_partitions)
    registry = TrinoRegistry(settings)
    registry.ensure_tables(tables)
    spark = build_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    query = build_query(spark, settings, tables, registry)

    def stop(signum, frame):
        log.info("stopping the sink (signal %d)", signum)
        query.stop()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready = Path(settings.home) / "run" / "sink.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(str(time.time()))
    log.info("sink running: %d topics -> %s (trigger %ss)", len(tables), settings.warehouse_url,
             settings.sink_trigger_s)
    try:
        query.awaitTermination()
    finally:
        ready.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
