"""The streaming sink: typed Kafka topics -> parquet on HDFS -> Trino partitions.

Run: `python -m spark_sink.job` (settings from QUESTLOG_* environment variables, Spark tuning from
`$SPARK_CONF_DIR/spark-defaults.conf`), or on a cluster:
`spark-submit --master spark://HOST:7077 --packages <KAFKA_PACKAGE> spark_sink/job.py` (README).

`main()` only wires extract -> transform -> load: read every table's topic from Kafka, drop
repeated events (`transform.with_dedupe_key`), turn each micro-batch into rows per table
(`transform.to_rows`), write them batch-idempotently (`writer`) and register new date
partitions in Trino (`registry`). Progress is checkpointed on HDFS only after a batch is written,
so a restart resumes without loss.
"""

from __future__ import annotations

import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from pyspark.sql import DataFrame, SparkSession

from questlog.catalog import Catalog, Table
from questlog.catalog.watch import CatalogSource
from questlog.kafka_admin import ensure_pipeline_topics
from questlog.settings import Settings
from spark_sink import metrics as sink_metrics
from spark_sink.connector import KAFKA_PACKAGE
from spark_sink.registry import TrinoRegistry
from spark_sink.transform import dedupe_timing, seen_bucket, to_rows, with_dedupe_key
from spark_sink.writer import checkpoint_run_id, publish, stage

log = logging.getLogger("spark_sink")
stage = sink_metrics.counting_files(stage)  # GET /metrics counts the files of each table


# Tuning: used when neither spark-defaults.conf ($SPARK_CONF_DIR, the local stack's is
# compose/spark/) nor spark-submit's --conf sets the key. compose/spark/spark-defaults.conf holds
# the same values with the reasons.
TUNING: Mapping[str, str] = {
    "spark.driver.memory": "1g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.streaming.stateStore.rocksdb.trackTotalNumberOfRows": "false",
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.dfs.client.use.datanode.hostname": "true",
    "spark.sql.streaming.stateStore.rocksdb.boundedMemoryUsage": "true",
    "spark.sql.streaming.stateStore.rocksdb.maxMemoryUsageMB": "128",
}

# A table's rows of a batch up to this many are written as one file per date (no parallel
# write): at a steady trigger most batches are small, and every file is one more for HDFS and Trino.
SINGLE_FILE_ROWS = 50_000


def required_conf(settings: Settings) -> dict[str, str]:
    """What the rows and the checkpoint depend on, whatever the tuning: UTC dates, Trino's
    timestamp type, the file system, the state store format of the checkpoint."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.hadoop.fs.defaultFS": settings.hdfs_url,
        "spark.sql.streaming.stateStore.providerClass": "org.apache.spark.sql.execution.streaming.state.RocksDBStateStoreProvider",
        "spark.sql.streaming.stateStore.rocksdb.changelogCheckpointing.enabled": "true",
    }


def spark_defaults_file() -> Path:
    conf_dir = os.environ.get("SPARK_CONF_DIR")
    if conf_dir:
        return Path(conf_dir) / "spark-defaults.conf"
    import pyspark

    return Path(os.environ.get("SPARK_HOME") or Path(pyspark.__file__).parent) / "conf" / "spark-defaults.conf"


def read_spark_defaults(path: Path) -> dict[str, str]:
    """The keys and values of a spark-defaults.conf (whitespace-separated, # comments)."""
    if not path.is_file():
        return {}
    conf = {}
    for line in path.read_text().splitlines():
        line = line.strip()
        if line and not line.startswith("#"):
            key, _, value = line.partition(" ") if " " in line else line.partition("\t")
            conf[key.strip()] = value.strip()
    return conf


def submitted() -> bool:
    """Started by spark-submit (which launched the JVM with its --master, --packages and --conf)."""
    return "PYSPARK_GATEWAY_PORT" in os.environ


def build_session(settings: Settings) -> SparkSession:
    builder = SparkSession.builder.appName("questlog-sink")
    if submitted():
        from pyspark import SparkConf

        given = {k for k, _ in SparkConf().getAll()}
    else:
        builder = builder.master(settings.spark_master)
        builder = builder.config("spark.jars.packages", KAFKA_PACKAGE)
        builder = builder.config("spark.jars.ivy", str(Path(settings.cache) / "ivy"))
        given = set(read_spark_defaults(spark_defaults_file()))
    for key, value in TUNING.items():
        if key not in given:
            builder = builder.config(key, value)
    for key, value in required_conf(settings).items():
        builder = builder.config(key, value)
    return builder.getOrCreate()


class CatalogChanged(RuntimeError):
    """The deployed catalog changed under a running query: it restarts with the new one."""


class Lander:
    """The body of each micro-batch: rows per table, written, moved into place, registered.

    One job reads the batch (Kafka, dedupe state, cache) and counts its rows per topic; then
    every table of the batch is written by a job of its own, all at once, each moving its files
    into place and registering its new dates in Trino as soon as it is written."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        source: CatalogSource,
        catalog: Catalog,
        registry: TrinoRegistry,
        checkpoint: str,
    ) -> None:
        self.spark, self.settings, self.source, self.catalog = spark, settings, source, catalog
        self.registry, self.checkpoint = registry, checkpoint
        self.tables = {t.topic: t for t in catalog.tables(settings.raw_topic, settings.dlq_topic)}
        self.run_id: str | None = None  # the checkpoint's query id, read once the query has written it
        self.first = True  # the first batch after a start may be one Spark runs again
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.tables)), thread_name_prefix="land")

    def _land_table(
        self, batch: DataFrame, table: Table, rows: int, batch_id: int
    ) -> tuple[list[str], float, float, float]:
        started = time.monotonic()
        data = to_rows(batch, table)
        if rows <= SINGLE_FILE_ROWS:
            data = data.coalesce(1)  # one file per date for a small batch: fewer files a day
        root = f"{self.settings.warehouse_url}/{table.name}"
        assert self.run_id is not None  # read before any table is landed
        staging = stage(data, root, self.run_id, batch_id)
        staged = time.monotonic()
        dates = publish(self.spark, root, staging, self.run_id, batch_id, rerun=self.first)
        moved = time.monotonic()
        # New dates are registered here, beside the other tables' writes: the batch commits (and
        # its rows are queryable) only once every table's are.
        self.registry.register_partitions(table.name, dates)
        return dates, staged - started, moved - staged, time.monotonic() - moved

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if self.source.refresh() is not self.catalog:
            # The router may already route events with fields this query does not know.
            raise CatalogChanged(f"catalog changed before batch {batch_id}")
        if self.run_id is None:
            self.run_id = checkpoint_run_id(self.spark, self.checkpoint)
        batch.persist()
        try:
            counts = {r["topic"]: r["count"] for r in batch.groupBy("topic").count().collect()}
            read = time.monotonic()
            unknown = sorted(set(counts) - set(self.tables))
            if unknown:
                raise RuntimeError(f"batch {batch_id} has records of topics no table reads: {unknown}")
            jobs = {
                topic: self.pool.submit(self._land_table, batch, self.tables[topic], n, batch_id)
                for topic, n in sorted(counts.items())
            }
            landed = {self.tables[topic].name: job.result() for topic, job in jobs.items()}
            sink_metrics.landed({self.tables[topic].name: n for topic, n in counts.items()})
            self.first = False
        finally:
            batch.unpersist()
        if counts:
            log.info(
                "batch %d: %d rows of %s in %.2fs: read+dedupe %.2fs, write+move+register %.2fs (per table, "
                "summed: write %.2fs, move %.2fs, register %.2fs)",
                batch_id,
                sum(counts.values()),
                ", ".join(sorted(landed)),
                time.monotonic() - started,
                read - started,
                time.monotonic() - read,
                sum(t[1] for t in landed.values()),
                sum(t[2] for t in landed.values()),
                sum(t[3] for t in landed.values()),
            )


def build_query(
    spark: SparkSession, settings: Settings, source: CatalogSource, catalog: Catalog, registry: TrinoRegistry
):
    """The streaming query over every table's topic of ``catalog``.

    Records are deduplicated by (topic, key) for at least QUESTLOG_DEDUPE_WINDOW_H after they
    were first seen, in a RocksDB state store checkpointed with the offsets: a client retry, a
    router re-delivery or a replay of an event already landed is dropped. A batch that finds a
    newer deployed catalog fails instead of writing rows with stale columns; the query restarts
    on the new catalog and the batch runs again.
    """
    tables = catalog.tables(settings.raw_topic, settings.dlq_topic)
    bucket_s, delay_s = dedupe_timing(int(settings.dedupe_window_h * 3600))
    checkpoint = f"{settings.checkpoint_url}/sink"
    records = (
        with_dedupe_key(
            spark.readStream.format("kafka")
            .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
            .option("subscribe", ",".join(sorted(t.topic for t in tables)))
            .option("startingOffsets", "earliest")
            .option("maxOffsetsPerTrigger", settings.sink_max_batch_records)
            # Every task slot reads: a topic partition's records of a batch are split between
            # tasks (one task per topic partition otherwise, one core for a lone busy topic).
            .option("minPartitions", spark.sparkContext.defaultParallelism)
            .load(),
            tables,
        )
        # The watermark runs on the batch's own time, never on the records': a record is never
        # too late to be landed, only a repeat within the window is dropped.
        .select("topic", "value", "dedupe_key", seen_bucket(bucket_s).alias("seen_at"))
        .withWatermark("seen_at", f"{delay_s} seconds")
        .dropDuplicatesWithinWatermark(["topic", "dedupe_key"])
        .select("topic", "value")
    )
    return (
        records.writeStream.queryName("questlog-sink")
        .foreachBatch(Lander(spark, settings, source, catalog, registry, checkpoint))
        .option("checkpointLocation", checkpoint)
        .trigger(processingTime=f"{settings.sink_trigger_s} seconds")
        .start()
    )


def progress_line(progress: dict) -> str:
    """One log line from a batch's progress: where its time went in Spark and the state size."""
    d = progress.get("durationMs", {})
    parts = [
        f"batch {progress.get('batchId')}: {progress.get('numInputRows', 0)} rows, "
        + ", ".join(
            f"{k} {d[k] / 1000:.2f}s"
            for k in ("triggerExecution", "latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets")
            if k in d
        )
    ]
    for op in progress.get("stateOperators", []):
        m = op.get("customMetrics", {})
        parts.append(
            f"state: {op.get('numRowsUpdated', 0)} new keys, {op.get('numRowsRemoved', 0)} evicted, "
            f"{m.get('numDroppedDuplicateRows', 0)} repeats dropped, updates {op.get('allUpdatesTimeMs', 0) / 1000:.2f}s, "
            f"eviction {op.get('allRemovalsTimeMs', 0) / 1000:.2f}s, commit {op.get('commitTimeMs', 0) / 1000:.2f}s, "
            f"{m.get('rocksdbSstFileSize', 0) / 2**20:.1f} MiB of SST files, "
            f"{op.get('memoryUsedBytes', 0) / 2**20:.1f} MiB in memory"
        )
    return "; ".join(parts)


def run(
    spark: SparkSession,
    settings: Settings,
    source: CatalogSource,
    registry: TrinoRegistry,
    stopping: threading.Event,
    ready: Path,
) -> None:
    """Run the query until ``stopping``; rebuild it whenever the deployed catalog changes (new
    types need their topics read, new fields their columns added first)."""
    while not stopping.is_set():
        catalog = source.get()
        tables = catalog.tables(settings.raw_topic, settings.dlq_topic)
        ensure_pipeline_topics(settings, catalog)
        registry.ensure_tables(tables)
        query = build_query(spark, settings, source, catalog, registry)
        ready.write_text(str(time.time()))
        log.info(
            "sink running: %d topics -> %s (trigger %ss)", len(tables), settings.warehouse_url, settings.sink_trigger_s
        )
        logged = None
        while True:
            try:
                if query.awaitTermination(1):
                    raise RuntimeError("the streaming query stopped by itself")
            except Exception as exc:
                if source.refresh() is not catalog:
                    log.info("catalog changed: restarting the query")
                    break
                raise RuntimeError(f"the streaming query failed: {exc}") from exc
            progress = query.lastProgress
            if progress and progress.get("batchId") != logged and progress.get("numInputRows"):
                logged = progress.get("batchId")
                log.info("progress %s", progress_line(progress))
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
    sink_metrics.serve(spark, settings)  # GET /metrics on QUESTLOG_SINK_METRICS_BIND
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
