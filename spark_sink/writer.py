"""Batch-idempotent parquet writes on HDFS.

A micro-batch is first written to ``<table>/_staging/<run>-<id>/`` (hidden from Trino), then its
files are renamed into ``<table>/dt=<date>/part-<run>-b<id>-<n>.parquet``, where ``<run>`` names
the checkpoint (its query id) and ``<id>`` the batch. A batch that Spark may be running again
after a crash (the first one a query runs after it starts) first removes whatever an earlier
attempt of the same batch moved, so the table never holds a batch twice and never shows a
half-written file; a new checkpoint never touches older files. Later batches of the same query
are new by construction, so they skip that look-up: a date directory gains thousands of files
a day and is not listed again for each batch. Were one of them a repeat after all, its first file
would meet the earlier attempt's name and the rename fails: the batch fails, never lands twice.

Compaction (questlog/compact.py) may have pointed a date partition at a new directory (a new
generation of its files): a batch's files go into the directory the partition's metastore entry
names NOW, read under the table's publish lock, which the compactor also takes for its switch.
"""

from __future__ import annotations

import json
import time

from pyspark.sql import DataFrame, SparkSession

from questlog.catalog import PARTITION_COLUMN
from questlog.compact import LOCK_DIR, METASTORE_DIR, PUBLISH_LOCK, SCHEMA_FILE
from questlog.settings import Settings


def batch_prefix(run: str, batch_id: int) -> str:
    return f"part-{run}-b{batch_id:012d}-"


def hadoop(spark: SparkSession, path: str):
    """(the JVM, Hadoop's ``Path`` class, ``Path(path)``, its file system) of a live session."""
    jvm = spark.sparkContext._jvm
    assert jvm is not None  # a live session
    Path = jvm.org.apache.hadoop.fs.Path
    located = Path(path)
    return jvm, Path, located, located.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def checkpoint_run_id(spark: SparkSession, checkpoint: str) -> str:
    """A short name of the query that owns ``checkpoint`` (Spark writes its id there at start)."""
    jvm, _, path, fs = hadoop(spark, f"{checkpoint}/metadata")
    stream = fs.open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        return json.loads(reader.readLine())["id"].split("-")[0]
    finally:
        stream.close()


def stage(rows: DataFrame, table_root: str, run: str, batch_id: int) -> str:
    """Write ``rows`` (with the ``dt`` column) into the batch's staging directory, one Spark job,
    no shuffle: each task writes its own rows of each date. Returns the staging directory."""
    staging = f"{table_root}/_staging/{run}-{batch_id}"
    rows.write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(staging)
    return staging


def staged_dates(spark: SparkSession, staging: str) -> list[str]:
    """The dates (``dt`` directories) of a staging directory, sorted."""
    _, _, path, fs = hadoop(spark, staging)
    prefix = PARTITION_COLUMN + "="
    return sorted(
        s.getPath().getName()[len(prefix) :]
        for s in fs.listStatus(path)
        if s.isDirectory() and s.getPath().getName().startswith(prefix)
    )


def make_date_dirs(spark: SparkSession, table_root: str, dates: list[str]) -> None:
    """Create the directories the date partitions ``dates`` read from (a partition can only be
    registered over a directory that exists), before any file is moved there."""
    jvm, Path, root, fs = hadoop(spark, table_root)
    schema = Settings.from_env().trino_schema
    for date in dates:
        fs.mkdirs(current_location(jvm, fs, Path, root, schema, f"{PARTITION_COLUMN}={date}"))


def publish(spark: SparkSession, table_root: str, staging: str, run: str, batch_id: int, rerun: bool) -> list[str]:
    """Move the staged files of batch ``batch_id`` into their date directories and drop the
    staging directory; return the dates. With ``rerun``, first delete the files an earlier
    attempt of this batch moved there."""
    jvm, Path, root, fs = hadoop(spark, table_root)
    prefix = batch_prefix(run, batch_id)
    dates = []
    settings = Settings.from_env()
    lock = Path(root, f"{LOCK_DIR}/{PUBLISH_LOCK}")
    acquire(jvm, fs, lock, settings.compact_lock_s)
    try:
        for status in fs.listStatus(Path(staging)):
            name = status.getPath().getName()
            if not status.isDirectory() or not name.startswith(PARTITION_COLUMN + "="):
                continue
            target = current_location(jvm, fs, Path, root, settings.trino_schema, name)
            _move(fs, Path, status, target, prefix, rerun)
            dates.append(name.split("=", 1)[1])
    finally:
        fs.delete(lock, False)
    fs.delete(Path(staging), True)
    return sorted(dates)


def discard(spark: SparkSession, staging: str) -> None:
    """Remove a staging directory whose files will not be published."""
    _, _, path, fs = hadoop(spark, staging)
    fs.delete(path, True)


def acquire(jvm, fs, lock, expiry_s: float) -> None:
    """Take the table's publish lock (an exclusive create); break it if its holder left it longer
    than ``expiry_s`` ago (killed). The compactor holds it for a second or two at most."""
    while True:
        try:
            if fs.createNewFile(lock):
                return
        except Exception as exc:  # created by someone else between the check and the create
            if "AlreadyExists" not in str(exc):
                raise
        try:
            age_ms = jvm.java.lang.System.currentTimeMillis() - fs.getFileStatus(lock).getModificationTime()
            if age_ms > expiry_s * 1000:
                fs.delete(lock, False)
                continue
        except Exception as exc:  # released meanwhile
            if "FileNotFound" not in str(exc):
                raise
        time.sleep(0.05)


def current_location(jvm, fs, Path, root, schema: str, name: str):
    """The directory the date partition ``name`` (dt=...) reads from: its metastore entry's
    location, or ``<table>/<name>`` for a partition not registered yet."""
    meta = Path(f"{METASTORE_DIR}/{schema}/{root.getName()}/{name}/{SCHEMA_FILE}")
    if fs.exists(meta):
        stream = fs.open(meta)
        try:
            location = json.loads(jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")).get("externalLocation")
        finally:
            stream.close()
        if location:
            return Path(location)
    return Path(root, name)


def _move(fs, Path, status, target, prefix: str, rerun: bool) -> None:
    fs.mkdirs(target)
    if rerun:
        for old in fs.listStatus(target):
            if old.getPath().getName().startswith(prefix):
                fs.delete(old.getPath(), False)
    files = sorted(
        s.getPath().toString() for s in fs.listStatus(status.getPath()) if s.getPath().getName().endswith(".parquet")
    )
    for n, src in enumerate(files):
        if not fs.rename(Path(src), Path(target, f"{prefix}{n:04d}.parquet")):
            raise OSError(f"could not move {src} into {target.toString()}")


def write_batch(
    spark: SparkSession, rows: DataFrame, table_root: str, run: str, batch_id: int, rerun: bool = True
) -> list[str]:
    """Write ``rows`` (with the ``dt`` column) under ``table_root`` as batch ``batch_id``;
    return the dates written."""
    return publish(spark, table_root, stage(rows, table_root, run, batch_id), run, batch_id, rerun)
