"""The streaming sink: typed Kafka topics -> parquet on HDFS -> Trino partitions.

Run: `python -m spark_sink.job` (settings from QUESTLOG_* environment variables, Spark tuning from
`$SPARK_CONF_DIR/spark-defaults.conf`), or on a cluster:
`spark-submit --master spark://HOST:7077 --packages <KAFKA_PACKAGE> spark_sink/job.py` (README).

`main()` only wires extract -> transform -> load: read every table's topic from Kafka with each
record's key (`transform.with_fallback_key`, `dedupe.dedupe_keys`), drop repeats of records
already landed (`dedupe`, an index on the driver's disk), turn each micro-batch into rows per
table (`transform.to_rows`), write them batch-idempotently (`writer`) and register new date
partitions in Trino (`registry`).
Progress is checkpointed on HDFS only after a batch is written, so a restart resumes without loss.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
from collections import Counter
from collections.abc import Mapping
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from questlog.catalog import Catalog, Table
from questlog.catalog.watch import CatalogSource
from questlog.kafka_admin import admin_client, ensure_pipeline_topics
from questlog.settings import Settings
from spark_sink import metrics as sink_metrics
from spark_sink.connector import KAFKA_PACKAGE
from spark_sink.dedupe import DedupeIndex, dedupe_keys, repeats
from spark_sink.registry import TrinoRegistry
from spark_sink.transform import to_rows, with_fallback_key
from spark_sink.writer import checkpoint_run_id, discard, make_date_dirs, publish, stage, staged_dates

log = logging.getLogger("spark_sink")
publish = sink_metrics.counting_files(publish)  # GET /metrics counts the files of each table


# Tuning: used when neither spark-defaults.conf ($SPARK_CONF_DIR, the local stack's is
# compose/spark/) nor spark-submit's --conf sets the key. compose/spark/spark-defaults.conf holds
# the same values with the reasons.
TUNING: Mapping[str, str] = {
    "spark.driver.memory": "1g",
    "spark.ui.enabled": "false",
    "spark.ui.showConsoleProgress": "false",
    "spark.driver.extraJavaOptions": "-Duser.timezone=UTC",
    "spark.sql.shuffle.partitions": "2",
    "spark.sql.streaming.noDataMicroBatches.enabled": "false",
    "spark.hadoop.mapreduce.fileoutputcommitter.algorithm.version": "2",
    "spark.hadoop.mapreduce.fileoutputcommitter.marksuccessfuljobs": "false",
    "spark.hadoop.dfs.client.use.datanode.hostname": "true",
    "spark.hadoop.dfs.client.block.write.locateFollowingBlock.initial.delay.ms": "20",
}

# A table's rows of a batch up to this many are written as one file per date (no parallel
# write): at a steady trigger most batches are small, and every file is one more for HDFS and Trino.
SINGLE_FILE_ROWS = 50_000


def required_conf(settings: Settings) -> dict[str, str]:
    """What the rows and the checkpoint depend on, whatever the tuning: UTC dates, Trino's
    timestamp type, the file system."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.sql.parquet.outputTimestampType": "TIMESTAMP_MICROS",
        "spark.sql.sources.partitionOverwriteMode": "static",
        "spark.hadoop.fs.defaultFS": settings.hdfs_url,
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
    """The body of each micro-batch: rows per table, written, registered, moved into place.

    One job reads the batch (Kafka, cache) and brings its records' keys to the driver, where the
    dedupe index says which are repeats; meanwhile every table of the batch is written to its
    staging directory by a job of its own, all at once, each registering its new dates in Trino
    as soon as it is written. Once the index has answered, the files are moved into place."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        source: CatalogSource,
        catalog: Catalog,
        registry: TrinoRegistry,
        index: DedupeIndex,
        checkpoint: str,
    ) -> None:
        self.spark, self.settings, self.source, self.catalog = spark, settings, source, catalog
        self.registry, self.index, self.checkpoint = registry, index, checkpoint
        self.tables = {t.topic: t for t in catalog.tables(settings.raw_topic, settings.dlq_topic)}
        self.separators = {topic: t.key_separator for topic, t in self.tables.items()}
        self.run_id: str | None = None  # the checkpoint's query id, read once the query has written it
        self.first = True  # the first batch after a start may be one Spark runs again
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.tables)), thread_name_prefix="land")

    def close(self) -> None:
        self.pool.shutdown(wait=True)

    def _stage_table(self, batch: DataFrame, table: Table, rows: int, batch_id: int) -> tuple[str, float, float]:
        """Write the table's rows of the batch under its staging directory and register the dates
        Trino does not know yet: (the directory, write s, register s)."""
        started = time.monotonic()
        data = to_rows(batch, table)
        if rows <= SINGLE_FILE_ROWS:
            data = data.coalesce(1)  # one file per date for a small batch: fewer files a day
        assert self.run_id is not None  # read before any table is landed
        root = f"{self.settings.warehouse_url}/{table.name}"
        staging = stage(data, root, self.run_id, batch_id)
        written = time.monotonic()
        # A new date is registered now, over its still empty directory (it reads as no rows), while
        # the other tables are written and the dedupe index answers: not after the moves, where
        # Trino's calls would hold up the batch's commit (about a second on the first batch of a
        # day, one call per table).
        new = self.registry.unknown(table.name, staged_dates(self.spark, staging))
        if new:
            make_date_dirs(self.spark, root, new)
            self.registry.register_partitions(table.name, new)
        return staging, written - started, time.monotonic() - written

    def _publish_table(self, table: Table, staging: str, batch_id: int) -> float:
        """Move the staged files into place (their dates are registered already): the seconds it took."""
        started = time.monotonic()
        assert self.run_id is not None
        publish(self.spark, f"{self.settings.warehouse_url}/{table.name}", staging, self.run_id, batch_id, self.first)
        return time.monotonic() - started

    def _stage_all(self, batch: DataFrame, counts: Mapping[str, int], batch_id: int) -> dict[str, Future]:
        return {
            topic: self.pool.submit(self._stage_table, batch, self.tables[topic], n, batch_id)
            for topic, n in sorted(counts.items())
        }

    def __call__(self, batch: DataFrame, batch_id: int) -> None:
        started = time.monotonic()
        if self.source.refresh() is not self.catalog:
            # The router may already route events with fields this query does not know.
            raise CatalogChanged(f"catalog changed before batch {batch_id}")
        if self.run_id is None:
            self.run_id = checkpoint_run_id(self.spark, self.checkpoint)
        cached = batch.persist()  # `batch` may become the cache less its repeats below
        try:
            # One job reads the batch (Kafka, cache); its records' keys come to the driver as Arrow.
            ids = batch.select("topic", "key", "fallback_key", "partition", "offset").toArrow()
            ids = ids.append_column("dedupe_key", dedupe_keys(ids, self.separators))
            read = time.monotonic()
            counts = per_topic(ids)
            unknown = sorted(set(counts) - set(self.tables))
            if unknown:
                raise RuntimeError(f"batch {batch_id} has records of topics no table reads: {unknown}")
            # Every table is written to its staging directory while this thread asks the dedupe
            # index which records are repeats: nothing is moved into place before the answer.
            staging = self._stage_all(batch, counts, batch_id)
            name = f"{self.run_id}:{batch_id}".encode()
            drop, new = repeats(ids, self.index, name)
            self.index.record(new, name)
            deduped = time.monotonic()
            staged = {topic: job.result() for topic, job in staging.items()}
            if drop:  # written again without them (the same staging directories, overwritten)
                dropped = ids.take(drop)
                batch = self._without(batch, dropped)
                counts = +(Counter(counts) - Counter(per_topic(dropped)))  # tables left empty are not written
                for topic in set(staged) - set(counts):
                    discard(self.spark, staged[topic][0])
                staged = {topic: job.result() for topic, job in self._stage_all(batch, counts, batch_id).items()}
            written = time.monotonic()
            publishing = {
                topic: self.pool.submit(self._publish_table, self.tables[topic], staged[topic][0], batch_id)
                for topic in sorted(staged)
            }
            published = {topic: job.result() for topic, job in publishing.items()}
            landed = {self.tables[t].name: (staged[t][1], published[t], staged[t][2]) for t in published}
            sink_metrics.landed({self.tables[topic].name: n for topic, n in counts.items()})
            sink_metrics.REPEATS.inc(len(drop))
            sink_metrics.INDEX_SECONDS.observe(deduped - read)
            self.first = False
        finally:
            cached.unpersist()
        if counts or drop:
            held, on_disk = self.index.size()
            log.info(
                "batch %d: %d rows of %s in %.2fs (%d repeats dropped): read %.2fs, write %.2fs (dedupe "
                "meanwhile %.2fs), move %.2fs (per table, summed: write %.2fs, move %.2fs, "
                "register new dates while writing %.2fs); dedupe index ~%d keys, %.1f MiB of SST files",
                batch_id,
                sum(counts.values()),
                ", ".join(sorted(landed)) or "no table",
                time.monotonic() - started,
                len(drop),
                read - started,
                written - read,
                deduped - read,
                time.monotonic() - written,
                sum(t[0] for t in landed.values()),
                sum(t[1] for t in landed.values()),
                sum(t[2] for t in landed.values()),
                held,
                on_disk / 2**20,
            )

    def _without(self, batch: DataFrame, repeats: pa.Table) -> DataFrame:
        """``batch`` less the records at the positions of ``repeats`` (a broadcast anti-join)."""
        positions = self.spark.createDataFrame(repeats.select(["topic", "partition", "offset"]))
        return batch.join(F.broadcast(positions), ["topic", "partition", "offset"], "left_anti")


def per_topic(ids: pa.Table) -> dict[str, int]:
    """{topic: records} of a batch's ``ids`` (column ``topic``)."""
    counts = ids.column("topic").value_counts()
    return dict(zip(counts.field("values").to_pylist(), counts.field("counts").to_pylist(), strict=True))


def build_query(spark: SparkSession, settings: Settings, tables: list[Table], lander: Lander, starting: str):
    """The streaming query over the topics of ``tables``, from ``starting`` offsets (Spark's
    `startingOffsets`; only used by a checkpoint's first batch).

    Each record carries its Kafka key (and, without one, the key read from its JSON); the batch
    body (``lander``) makes each record's dedupe key from them and drops repeats of records
    landed within QUESTLOG_DEDUPE_WINDOW_H (client retries, router re-deliveries, replays) with the
    dedupe index. No Spark state, no shuffle: each batch is read by every task slot and written
    from there. A batch that finds a newer deployed catalog fails instead of writing rows with
    stale columns; the query restarts on the new catalog and the batch runs again.
    """
    records = with_fallback_key(
        spark.readStream.format("kafka")
        .option("kafka.bootstrap.servers", settings.kafka_bootstrap)
        .option("subscribe", ",".join(sorted(t.topic for t in tables)))
        .option("startingOffsets", starting)
        .option("maxOffsetsPerTrigger", settings.sink_max_batch_records)
        # Every task slot reads: a topic partition's records of a batch are split between
        # tasks (one task per topic partition otherwise, one core for a lone busy topic).
        .option("minPartitions", spark.sparkContext.defaultParallelism)
        .load(),
        tables,
    ).select("topic", "partition", "offset", "key", "fallback_key", "value")
    return (
        records.writeStream.queryName("questlog-sink")
        .foreachBatch(lander)
        .option("checkpointLocation", lander.checkpoint)
        .trigger(processingTime=f"{settings.sink_trigger_s} seconds")
        .start()
    )


def starting_offsets(spark: SparkSession, settings: Settings, topics: list[str]) -> str:
    """Where a new checkpoint starts: Kafka's earliest offsets, or, when a v1 checkpoint of an
    earlier Questlog (`Settings.sink_checkpoint_v1_dir`) committed batches, the offsets its last
    committed batch ended at (earliest for partitions it did not read), so an upgrade neither
    lands a record twice nor skips one."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a live session
    Path_ = jvm.org.apache.hadoop.fs.Path
    fs = Path_(settings.checkpoint_url).getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    v1, v2 = settings.sink_checkpoint_v1_dir, settings.sink_checkpoint_dir
    if fs.exists(Path_(f"{v2}/offsets")) or not fs.exists(Path_(f"{v1}/commits")):
        return "earliest"
    committed = [
        int(st.getPath().getName()) for st in fs.listStatus(Path_(f"{v1}/commits")) if st.getPath().getName().isdigit()
    ]
    if not committed:
        return "earliest"
    stream = fs.open(Path_(f"{v1}/offsets/{max(committed)}"))
    try:
        text = jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()
    offsets = resume_offsets(text, kafka_partitions(settings, topics))
    log.warning(
        "starting the v2 checkpoint %s where the v1 checkpoint %s ended (batch %d); repeats of records "
        "landed before this upgrade are not recognised (the dedupe index starts empty)",
        v2,
        v1,
        max(committed),
    )
    return json.dumps(offsets)


def resume_offsets(offsets_log: str, partitions: Mapping[str, list[int]]) -> dict[str, dict[str, int]]:
    """Spark's `startingOffsets` for ``partitions`` (topic -> partition numbers) from one file of a
    checkpoint's offsets log (a version line, the batch's metadata, then one JSON line per source
    with the offsets the batch ended at): where that batch ended, or earliest (-2) for a
    partition it did not read."""
    ended: dict[str, dict[str, int]] = {}
    for line in offsets_log.splitlines()[2:]:
        if line.strip().startswith("{"):
            for topic, parts in json.loads(line).items():
                ended.setdefault(topic, {}).update({str(p): int(o) for p, o in parts.items()})
    return {t: {str(p): ended.get(t, {}).get(str(p), -2) for p in ps} for t, ps in partitions.items()}


def kafka_partitions(settings: Settings, topics: list[str]) -> dict[str, list[int]]:
    """{topic: its partition numbers}, from one metadata request."""
    meta = admin_client(settings.kafka_bootstrap).list_topics(timeout=30)
    return {t: sorted(meta.topics[t].partitions) for t in topics}


def progress_line(progress: dict) -> str:
    """One log line from a batch's progress: where its time went in Spark."""
    d = progress.get("durationMs", {})
    parts = [
        f"batch {progress.get('batchId')}: {progress.get('numInputRows', 0)} rows, "
        + ", ".join(
            f"{k} {d[k] / 1000:.2f}s"
            for k in ("triggerExecution", "latestOffset", "queryPlanning", "walCommit", "addBatch", "commitOffsets")
            if k in d
        )
    ]
    return "; ".join(parts)


def run(
    spark: SparkSession,
    settings: Settings,
    source: CatalogSource,
    registry: TrinoRegistry,
    index: DedupeIndex,
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
        checkpoint = settings.hdfs_url.rstrip("/") + settings.sink_checkpoint_dir
        lander = Lander(spark, settings, source, catalog, registry, index, checkpoint)
        starting = starting_offsets(spark, settings, [t.topic for t in tables])
        try:
            watch(build_query(spark, settings, tables, lander, starting), source, catalog, stopping, ready, settings)
        finally:
            lander.close()


def watch(
    query, source: CatalogSource, catalog: Catalog, stopping: threading.Event, ready: Path, settings: Settings
) -> None:
    """Wait on a running query, logging each batch's progress, until it must stop or restart."""
    ready.write_text(str(time.time()))
    log.info(
        "sink running: %d topics -> %s (trigger %ss)",
        len(catalog.tables(settings.raw_topic, settings.dlq_topic)),
        settings.warehouse_url,
        settings.sink_trigger_s,
    )
    logged = None
    while True:
        try:
            if query.awaitTermination(1):
                raise RuntimeError("the streaming query stopped by itself")
        except Exception as exc:
            if source.refresh() is not catalog:
                log.info("catalog changed: restarting the query")
                return
            raise RuntimeError(f"the streaming query failed: {exc}") from exc
        progress = query.lastProgress
        if progress and progress.get("batchId") != logged and progress.get("numInputRows"):
            logged = progress.get("batchId")
            log.info("progress %s", progress_line(progress))
        if stopping.is_set() or source.get() is not catalog:
            query.stop()
            return


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
    index = DedupeIndex(settings.dedupe_index_dir, settings.dedupe_window_h * 3600)
    try:
        run(spark, settings, source, registry, index, stopping, ready)
    finally:
        ready.unlink(missing_ok=True)
        spark.stop()
        index.close()
    log.info("sink stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
