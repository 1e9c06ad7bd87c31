"""The streaming sink: typed Kafka topics -> Iceberg tables (parquet on HDFS, a JDBC catalog on
PostgreSQL that Trino shares).

Run: `python -m spark_sink.job` (settings from QUESTLOG_* environment variables, Spark tuning from
`$SPARK_CONF_DIR/spark-defaults.conf`), or on a cluster:
`spark-submit --master spark://HOST:7077 --packages <PACKAGES> spark_sink/job.py` (README; the
packages are `python -m spark_sink.connector`'s).

`main()` only wires extract -> transform -> load: read every table's topic from Kafka with each
record's key (`transform.with_fallback_key`, `dedupe.dedupe_keys`), drop repeats of records
already landed (`dedupe`, an index on the driver's disk), turn each micro-batch into rows per
table (`transform.to_rows`) and append them to each table as one Iceberg commit whose snapshot
names the checkpoint and batch (`tables`), so a batch Spark runs again is never committed twice.
Progress is checkpointed on HDFS only after every table of a batch committed, so a restart resumes
without loss.
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
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pyarrow as pa
from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from questlog.catalog import Catalog, Table
from questlog.catalog.watch import CatalogSource
from questlog.kafka_admin import admin_client
from questlog.settings import Settings
from spark_sink import metrics as sink_metrics
from spark_sink.connector import PACKAGES
from spark_sink.dedupe import DedupeIndex, dedupe_keys, repeats
from spark_sink.migrate import migrate
from spark_sink.session import ICEBERG_EXTENSIONS, attach_catalog, kafka_options
from spark_sink.tables import IcebergTables
from spark_sink.transform import to_rows, with_fallback_key

log = logging.getLogger("spark_sink")


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
# write): at a steady trigger most batches are small, and every file is one more for HDFS, the
# table's manifests and Trino.
SINGLE_FILE_ROWS = 50_000


def required_conf(settings: Settings) -> dict[str, str]:
    """What the rows and the checkpoint depend on, whatever the tuning: UTC dates, the file system,
    Iceberg's SQL extensions (its procedures)."""
    return {
        "spark.sql.session.timeZone": "UTC",
        "spark.hadoop.fs.defaultFS": settings.hdfs_url,
        "spark.sql.extensions": ICEBERG_EXTENSIONS,
        # the Kafka source's options hold the sink's password (kafka.sasl.jaas.config): redacted
        # wherever Spark shows options (plans, the UI), as it redacts URLs by default
        "spark.sql.redaction.options.regex": "(?i)url|jaas|password",
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
        builder = builder.config("spark.jars.packages", ",".join(PACKAGES))
        builder = builder.config("spark.jars.ivy", str(Path(settings.cache) / "ivy"))
        given = set(read_spark_defaults(spark_defaults_file()))
    for key, value in TUNING.items():
        if key not in given:
            builder = builder.config(key, value)
    for key, value in required_conf(settings).items():
        builder = builder.config(key, value)
    spark = builder.getOrCreate()
    attach_catalog(spark, settings)  # its password set on the live session, not on a command line
    return spark


class CatalogChanged(RuntimeError):
    """The deployed catalog changed under a running query: it restarts with the new one."""


class Lander:
    """The body of each micro-batch: rows per table, each table one Iceberg commit.

    One job reads the batch (Kafka, cache) and brings its records' keys to the driver, where the
    dedupe index says which are repeats; then every table of the batch is written and committed by
    a job of its own, all at once (one append per table, whose snapshot names the checkpoint and the
    batch). The batch Spark runs again after a crash (planned, not committed in the checkpoint):
    tables whose snapshots show that batch committed already are not written again."""

    def __init__(
        self,
        spark: SparkSession,
        settings: Settings,
        source: CatalogSource,
        catalog: Catalog,
        tables: IcebergTables,
        index: DedupeIndex,
        checkpoint: str,
    ) -> None:
        self.spark, self.settings, self.source, self.catalog = spark, settings, source, catalog
        self.iceberg, self.index, self.checkpoint = tables, index, checkpoint
        self.tables = {t.topic: t for t in catalog.tables(settings.raw_topic, settings.dlq_topic)}
        self.separators = {topic: t.key_separator for topic, t in self.tables.items()}
        self.run_id: str | None = None  # the checkpoint's query id, read once the query has written it
        # the batch Spark runs again (planned in the checkpoint's offsets log before this start, never
        # committed there): it may have committed some tables already. Every other batch is new.
        self.rerun: int | None = pending_batch(spark, checkpoint)
        self.pool = ThreadPoolExecutor(max_workers=max(1, len(self.tables)), thread_name_prefix="land")
        # the files each commit added, read back from the table's metadata for the files metric: off
        # the batch's path (one more catalog load and metadata read per table, which no row waits for)
        self.counting = ThreadPoolExecutor(max_workers=1, thread_name_prefix="count-files")

    def close(self) -> None:
        self.pool.shutdown(wait=True)
        self.counting.shutdown(wait=True)

    def _count_files(self, table: str, batch_id: int) -> None:
        assert self.run_id is not None
        try:
            sink_metrics.FILES.labels(table).inc(self.iceberg.added_files(table, self.run_id, batch_id))
        except Exception as exc:  # a metric, never a reason to fail or hold a batch
            log.warning("could not count the files batch %d added to %s: %s", batch_id, table, exc)

    def _land_table(self, batch: DataFrame, table: Table, rows: int, batch_id: int) -> float:
        """Write the table's rows of the batch and commit them as one snapshot: the seconds it took."""
        started = time.monotonic()
        data = to_rows(batch, table)
        if rows <= SINGLE_FILE_ROWS:
            data = data.coalesce(1)  # one file per date for a small batch: fewer files a day
        assert self.run_id is not None  # read before any table is landed
        self.iceberg.append(data, table.name, self.run_id, batch_id)
        self.counting.submit(self._count_files, table.name, batch_id)
        return time.monotonic() - started

    def _committed_already(self, topics: list[str], batch_id: int) -> set[str]:
        """Those of ``topics`` whose table committed batch ``batch_id`` of this checkpoint already."""
        assert self.run_id is not None
        done = set()
        for topic in topics:
            last = self.iceberg.committed(self.tables[topic].name, self.run_id)
            if last is not None and last >= batch_id:
                done.add(topic)
        return done

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
            name = f"{self.run_id}:{batch_id}".encode()
            drop, new = repeats(ids, self.index, name)
            # Recorded before the commits: a crash in between re-runs this batch under the same
            # name, which keeps these records as its own.
            self.index.record(new, name)
            if drop:
                dropped = ids.take(drop)
                batch = self._without(batch, dropped)
                counts = +(Counter(counts) - Counter(per_topic(dropped)))  # tables left empty are not written
            deduped = time.monotonic()
            skipped = self._committed_already(sorted(counts), batch_id) if batch_id == self.rerun else set()
            if skipped:
                log.warning(
                    "batch %d was committed to %s before a restart: not committed again",
                    batch_id,
                    ", ".join(sorted(self.tables[t].name for t in skipped)),
                )
            landing = {
                topic: self.pool.submit(self._land_table, batch, self.tables[topic], n, batch_id)
                for topic, n in sorted(counts.items())
                if topic not in skipped
            }
            landed = {self.tables[t].name: job.result() for t, job in landing.items()}
            written = time.monotonic()
            sink_metrics.landed({self.tables[t].name: counts[t] for t in landing})
            sink_metrics.REPEATS.inc(len(drop))
            sink_metrics.INDEX_SECONDS.observe(deduped - read)
        finally:
            cached.unpersist()
        if counts or drop:
            held, on_disk = self.index.size()
            log.info(
                "batch %d: %d rows of %s in %.2fs (%d repeats dropped): read %.2fs, dedupe %.2fs, "
                "write and commit %.2fs (per table, summed: %.2fs); dedupe index ~%d keys, %.1f MiB of SST files",
                batch_id,
                sum(counts.values()),
                ", ".join(sorted(landed)) or "no table",
                time.monotonic() - started,
                len(drop),
                read - started,
                deduped - read,
                written - deduped,
                sum(landed.values()),
                held,
                on_disk / 2**20,
            )

    def _without(self, batch: DataFrame, repeats: pa.Table) -> DataFrame:
        """``batch`` less the records at the positions of ``repeats`` (a broadcast anti-join)."""
        positions = self.spark.createDataFrame(repeats.select(["topic", "partition", "offset"]))
        return batch.join(F.broadcast(positions), ["topic", "partition", "offset"], "left_anti")


def pending_batch(spark: SparkSession, checkpoint: str) -> int | None:
    """The batch a query started now on ``checkpoint`` runs again: the last one of its offsets log
    when its commits log lacks it (Spark re-runs it with the same offsets), else None."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    conf = spark.sparkContext._jsc.hadoopConfiguration()

    def batches(log: str) -> list[int]:
        path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint}/{log}")
        fs = path.getFileSystem(conf)
        if not fs.exists(path):
            return []
        return [int(n) for n in (st.getPath().getName() for st in fs.listStatus(path)) if n.isdigit()]

    planned, committed = batches("offsets"), batches("commits")
    if planned and max(planned) > max(committed, default=-1):
        return max(planned)
    return None


def checkpoint_run_id(spark: SparkSession, checkpoint: str) -> str:
    """A short name of the query that owns ``checkpoint`` (Spark writes its id there at start)."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a live session
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint}/metadata")
    stream = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration()).open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        return json.loads(reader.readLine())["id"].split("-")[0]
    finally:
        stream.close()


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
        .options(**kafka_options(settings))
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
    meta = admin_client(settings.kafka_client()).list_topics(timeout=30)
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


def existing_topics(settings: Settings) -> list[str]:
    """The topics Kafka has (that the sink may describe). The sink creates none: the admin does,
    as the stack starts and before `questlog catalog deploy` writes a new type
    (questlog.kafka_admin.deploy_with_topics)."""
    return list(admin_client(settings.kafka_client()).list_topics(timeout=30).topics)


def landable(tables: list[Table], topics: list[str]) -> list[Table]:
    """The tables whose topics exist: a type without its topic (Kafka refused to create it, or a
    catalog deployed by hand without `questlog catalog deploy`) is left out of the query until
    the catalog changes, rather than failing it for every type."""
    missing = sorted(t.name for t in tables if t.topic not in topics)
    if missing:
        log.error(
            "not landing %s: their topics do not exist (`questlog catalog deploy` creates them)", ", ".join(missing)
        )
    return [t for t in tables if t.topic in topics]


def run(
    spark: SparkSession,
    settings: Settings,
    source: CatalogSource,
    index: DedupeIndex,
    stopping: threading.Event,
    ready: Path,
) -> None:
    """Run the query until ``stopping``; rebuild it whenever the deployed catalog changes (new
    types need their topics read, new fields their columns added first)."""
    iceberg = IcebergTables(spark, settings)
    report_failures = 0  # queries in a row stopped by the progress report of a batch run again
    while not stopping.is_set():
        catalog = source.get()
        tables = landable(catalog.tables(settings.raw_topic, settings.dlq_topic), existing_topics(settings))
        iceberg.ensure(tables, log)
        log.info("Iceberg tables ready: %s", ", ".join(sorted(t.name for t in tables)))
        checkpoint = settings.hdfs_url.rstrip("/") + settings.sink_checkpoint_dir
        migrate(spark, settings, iceberg, tables, checkpoint)  # the previous version's Hive tables, once
        lander = Lander(spark, settings, source, catalog, iceberg, index, checkpoint)
        starting = starting_offsets(spark, settings, [t.topic for t in tables])
        try:
            query = build_query(spark, settings, tables, lander, starting)
            if watch(query, source, catalog, stopping, ready, settings, started_on_a_rerun=lander.rerun is not None):
                report_failures += 1
                if report_failures > 3:  # the batch is not getting committed: not that case
                    raise RuntimeError("the query keeps failing on the batch it runs again")
            else:
                report_failures = 0
        finally:
            lander.close()


def failure_text(exc: BaseException) -> str:
    """A failed query's message with its JVM stack trace and causes (PySpark's captured exception
    keeps the stack trace aside)."""
    parts: list[str] = []
    cause: BaseException | None = exc
    while cause is not None and len(parts) < 10:
        parts += [str(cause), str(getattr(cause, "_stackTrace", "") or "")]
        cause = getattr(cause, "_cause", None) or cause.__cause__
    return "\n".join(parts)


def progress_report_failed(message: str) -> bool:
    """Whether a query failed in the Kafka source's progress metrics (SPARK 4.1, a batch run again)."""
    return "NullPointerException" in message and "KafkaMicroBatchStream" in message


def watch(
    query,
    source: CatalogSource,
    catalog: Catalog,
    stopping: threading.Event,
    ready: Path,
    settings: Settings,
    started_on_a_rerun: bool = False,
) -> bool:
    """Wait on a running query, logging each batch's progress, until it must stop or restart; True
    when it failed in Spark's progress report of the batch it ran again (``started_on_a_rerun``)."""
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
                return False
            if progress_report_failed(failure_text(exc)) and started_on_a_rerun:
                # Spark 4.1's Kafka source fails to report the progress of the batch a restarted
                # query runs again (KafkaMicroBatchStream.metrics: no latest offsets yet), after the
                # batch and its commit are done: the next query goes on from the next batch.
                log.warning("the query failed reporting a batch run again after a restart; starting it again: %s", exc)
                return True
            raise RuntimeError(f"the streaming query failed: {exc}") from exc
        progress = query.lastProgress
        if progress and progress.get("batchId") != logged and progress.get("numInputRows"):
            logged = progress.get("batchId")
            log.info("progress %s", progress_line(progress))
        if stopping.is_set() or source.get() is not catalog:
            query.stop()
            return False


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    source = CatalogSource(settings.catalog)
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
        run(spark, settings, source, index, stopping, ready)
    finally:
        ready.unlink(missing_ok=True)
        spark.stop()
        index.close()
    log.info("sink stopped")
    return 0


if __name__ == "__main__":
    sys.exit(main())
