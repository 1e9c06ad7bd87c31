"""The streaming sink: typed Kafka topics -> parquet on HDFS -> Trino partitions.

Run: `python -m spark_sink.job` (settings from QUESTLOG_* environment variables).

`main()` only wires extract -> transform -> load: read every table's topic from Kafka, drop
repeated events (`transform.dedupe_key`), turn each micro-batch into rows per table
(`transform.to_rows`), write them batch-idempotently (`writer.write_batch`) and register new date
partitions in Trino (`registry`). Progress is checkpointed on HDFS only after a batch is written,
so a restart resumes without loss.
"""

from __future__ import annotations

import logging
import signal
import sys
import threading
import time
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from questlog.catalog import Catalog
from questlog.catalog.watch import CatalogSource
from questlog.kafka_admin import ensure_topics
from questlog.settings import Settings
from spark_sink.registry import TrinoRegistry
from spark_sink.transform import dedupe_key, to_rows
from spark_sink.writer import checkpoint_run_id, write_batch

log = logging.getLogger("spark_sink")

KAFKA_PACKAGE = "org.apache.spark:spark-sql-kafka-0-10_2.13:4.2.0"


def build_session(settings: Settings) -> SparkSession:
    return (
        SparkSession.builder.master(settings.spark_master).appName("questlog-sink")
        .config("spark.driver.memory", "1g")
        .config("spark.ui.enabled", "false")
        .config("spark.ui.showConsoleProgress", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.driver.extraJavaOptions", "-Duser.timezone=UTC")
        .config("spark.sql.parquet.outputTimestampType", "TIMESTAMP_MICROS")
        .config("spark.sql.sources.partitionOverwriteMode", "static")
        .config("spark.hadoop.fs.defaultFS", settings.hdfs_url)
        .config("spark.hadoop.dfs.client.use.datanode.hostname", "true")
        .config("spark.jars.ivy", str(Path(settings.cache) / "ivy"))
        .config("spark.sql.streaming.stateStore.providerClass",
                "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider")
        .config("spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled", "true")
        .config("spark.jars.packages", KAFKA_PACKAGE)
        .getOrCreate()
    )


class CatalogChanged(RuntimeError):
    """The deployed catalog changed under a running query: it restarts with the new one."""


def build_query(spark: SparkSession, settings: Settings, source: CatalogSource, catalog: Catalog,
                registry: TrinoRegistry):
    """The streaming query over every table's topic of ``catalog``.

    Records are deduplicated by (topic, key) within QUESTLOG_DEDUPE_WINDOW_H of the sink's batch
    time, in a RocksDB state store checkpointed with the offsets: a client retry, a router
    re-delivery or a replay of an event already landed is dropped. A batch that finds a newer deployed catalog
    fails instead of writing rows with stale columns; the query restarts on the new catalog and
    the batch runs again.
    """
    tables = {t.topic: t for t in catalog.tables(settings.raw_topic, settings.dlq_topic)}
    window_s = int(settings.dedupe_window_h * 3600)
    checkpoint = f"{settings.checkpoint_url}/sink"
    run_id: list[str] = []  # the checkpoint's query id, read once the query has written it
    records = (
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", ",".join(sorted(tables)))
        .option("startingOffsets", "earliest")
        .option("maxOffsetsPerTrigger", 200_000)
        .load()
        .withColumn("dedupe_key", dedupe_key(tables.values()))
        # The watermark runs on the batch's own time, never on the records': a record is never
        # too late to be landed, only a repeat within the window is dropped.
        .withColumn("seen_at", F.current_timestamp())
        .withWatermark("seen_at", f"{window_s} seconds")
        .dropDuplicatesWithinWatermark(["topic", "dedupe_key"])
        .select("topic", "value")
    )

    def land(batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if source.refresh() is not catalog:
            # The router may already route events with fields this query does not know.
            raise CatalogChanged(f"catalog changed before batch {batch_id}")
        if not run_id:
            run_id.append(checkpoint_run_id(spark, checkpoint))
        batch.persist()
        try:
            topics = [row.topic for row in batch.select("topic").distinct().collect()]
            for topic in sorted(topics):
                table = tables[topic]
                dates = write_batch(spark, to_rows(batch, table), f"{settings.warehouse_url}/{table.name}",
                                    run_id[0], batch_id)
                registry.register_partitions(table.name, dates)
            if topics:
                log.info("batch %d landed %s in %.1fs", batch_id, ", ".join(tables[t].name for t in sorted(topics)),
                         time.monotonic() - started)
        finally:
            batch.unpersist()

    return (
        records.writeStream.queryName("questlog-sink")
        .foreachBatch(land)
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime=f"{settings.sink_trigger_s} seconds")
        .start()
    )


def run(spark: SparkSession, settings: Settings, source: CatalogSource, registry: TrinoRegistry,
        stopping: threading.Event, ready: Path) -> None:
    """Run the query until ``stopping``; rebuild it whenever the deployed catalog changes (new
    types need their topics read, new fields their columns added first)."""
    while not stopping.is_set():
        catalog = source.get()
        tables = catalog.tables(settings.raw_topic, settings.dlq_topic)
        ensure_topics(settings.kafka_bootstrap, [t.topic for t in tables], settings.topic_partitions)
        registry.ensure_tables(tables)
        query = build_query(spark, settings, source, catalog, registry)
        ready.write_text(str(time.time()))
        log.info("sink running: %d topics -> %s (trigger %ss)", len(tables), settings.warehouse_url,
                 settings.sink_trigger_s)
        while True:
            try:
                if query.awaitTermination(1):
                    raise RuntimeError("the streaming query stopped by itself")
            except Exception as exc:
                if source.refresh() is not catalog:
                    log.info("catalog changed: restarting the query")
                    break
                raise RuntimeError(f"the streaming query failed: {exc}") from exc
            if stopping.is_set() or source.get() is not catalog:
                query.stop()
                break


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    source = CatalogSource(settings.catalog)
    registry = TrinoRegistry(settings)
    spark = build_session(settings)
    spark.sparkContext.setLogLevel("WARN")
    stopping = threading.Event()

    def stop(signum, frame):
        log.info("stopping the sink (signal %d)", signum)
        stopping.set()

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    ready = Path(settings.home) / "run" / "sink.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    try:
        run(spark, settings, source, registry, stopping, ready)
    finally:
        ready.unlink(missing_ok=True)
        spark.stop()
    log.info("sink stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
