"""Batch-idempotent parquet writes on HDFS.

A micro-batch is first written to ``<table>/_staging/<run>-<id>/`` (hidden from Trino), then its
files are renamed into ``<table>/dt=<date>/part-<run>-b<id>-<n>.parquet``, where ``<run>`` names
the checkpoint (its query id) and ``<id>`` the batch. A batch that Spark re-runs after a crash
first removes whatever an earlier attempt of the same batch moved, so the table never holds a
batch twice and never shows a half-written file; a new checkpoint never touches older files.
"""

from __future__ import annotations

import json

from pyspark.sql import DataFrame, SparkSession

from questlog.catalog import PARTITION_COLUMN


def batch_prefix(run: str, batch_id: int) -> str:
    return f"part-{run}-b{batch_id:012d}-"


def checkpoint_run_id(spark: SparkSession, checkpoint: str) -> str:
    """A short name of the query that owns ``checkpoint`` (Spark writes its id there at start)."""
    jvm = spark.sparkContext._jvm
    path = jvm.org.apache.hadoop.fs.Path(f"{checkpoint}/metadata")
    fs = path.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())
    stream = fs.open(path)
    try:
        reader = jvm.java.io.BufferedReader(jvm.java.io.InputStreamReader(stream, "UTF-8"))
        return json.loads(reader.readLine())["id"].split("-")[0]
    finally:
        stream.close()


def write_batch(spark: SparkSession, rows: DataFrame, table_root: str, run: str, batch_id: int) -> list[str]:
    """Write ``rows`` (with the ``dt`` column) under ``table_root``; return the dates written."""
    jvm = spark.sparkContext._jvm
    conf = spark.sparkContext._jsc.hadoopConfiguration()
    Path = jvm.org.apache.hadoop.fs.Path
    root = Path(table_root)
    fs = root.getFileSystem(conf)
    staging = Path(f"{table_root}/_staging/{run}-{batch_id}")

    rows.repartition(PARTITION_COLUMN).write.mode("overwrite").partitionBy(PARTITION_COLUMN).parquet(
        staging.toString())

    prefix = batch_prefix(run, batch_id)
    dates = []
    for status in fs.listStatus(staging):
        name = status.getPath().getName()
        if not status.isDirectory() or not name.startswith(PARTITION_COLUMN + "="):
            continue
        dt = name.split("=", 1)[1]
        target = Path(root, name)
        fs.mkdirs(target)
        for old in fs.listStatus(target):
            if old.getPath().getName().startswith(prefix):
                fs.delete(old.getPath(), False)
        files = sorted(s.getPath().toString() for s in fs.listStatus(status.getPath())
                       if s.getPath().getName().endswith(".parquet"))
        for n, src in enumerate(files):
            if not fs.rename(Path(src), Path(target, f"{prefix}{n:04d}.parquet")):
                raise IOError(f"could not move {src} into {target.toString()}")
        dates.append(dt)
    fs.delete(staging, True)
    return sorted(dates)
