"""Upgrading from the Hive tables of the previous version: their rows brought into the Iceberg
tables once, by the sink at start, before its query runs.

The previous version kept each table as Hive-style parquet under ``<warehouse>/<table>/dt=D/``
(after compaction, under the directory the partition's metastore entry names), registered in
Trino's file metastore on HDFS: ``/questlog/metastore/<schema>/<table>/dt=D/.trinoSchema`` (JSON,
``externalLocation``). For each table that has such partitions and whose Iceberg table has no
snapshot marked ``questlog.migrated-from=hive``, every partition's parquet files are read and
appended as ONE commit carrying that mark: a crash before it leaves nothing to undo, and the next
start does it again; after it, never again.

Left out: files of the batches the old sink had not committed in the checkpoint that the new sink
goes on with (``part-<run>-b<batch>-...`` of the same run, above its last commit). Spark runs those
batches again, and the sink lands them (the dedupe index knows their keys as that batch's own), so
they are neither lost nor doubled. The old files and metastore stay where they were (outside the
Iceberg tables' locations); nothing here deletes them.
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Iterable

from pyspark.sql import DataFrame, SparkSession
from pyspark.sql import functions as F

from questlog.catalog import PARTITION_COLUMN, Table
from questlog.settings import Settings
from spark_sink.tables import IcebergTables

log = logging.getLogger(__name__)

METASTORE_DIR = "/questlog/metastore"  # the previous version's hive.metastore.catalog.dir
SCHEMA_FILE = ".trinoSchema"
PART_RE = re.compile(r"^part-(?P<run>[0-9a-f]+)-b(?P<batch>\d{12})-\d+\.parquet$")


def rerun_by_sink(name: str, run: str | None, last_commit: int | None) -> bool:
    """Whether ``name`` is a file of a batch the sink of checkpoint ``run`` may still run again."""
    m = PART_RE.match(name)
    return bool(m and run is not None and m["run"] == run and (last_commit is None or int(m["batch"]) > last_commit))


def _fs(spark: SparkSession, path: str):
    jvm = spark.sparkContext._jvm
    assert jvm is not None
    p = jvm.org.apache.hadoop.fs.Path(path)
    return jvm, p, p.getFileSystem(spark.sparkContext._jsc.hadoopConfiguration())


def _read(spark: SparkSession, path: str) -> str:
    jvm, p, fs = _fs(spark, path)
    stream = fs.open(p)
    try:
        return jvm.org.apache.commons.io.IOUtils.toString(stream, "UTF-8")
    finally:
        stream.close()


def hive_partitions(spark: SparkSession, settings: Settings, table: str) -> list[tuple[str, str]]:
    """(date, directory) of each partition the previous version registered for ``table``."""
    root = f"{settings.hdfs_url.rstrip('/')}{METASTORE_DIR}/{settings.trino_schema}/{table}"
    _, path, fs = _fs(spark, root)
    if not fs.exists(path):
        return []
    out = []
    for status in fs.listStatus(path):
        name = status.getPath().getName()
        if not status.isDirectory() or not name.startswith(PARTITION_COLUMN + "="):
            continue
        location = None
        meta = f"{root}/{name}/{SCHEMA_FILE}"
        if fs.exists(_fs(spark, meta)[1]):
            location = json.loads(_read(spark, meta)).get("externalLocation")
        out.append((name.split("=", 1)[1], location or f"{settings.warehouse_url}/{table}/{name}"))
    return sorted(out)


def checkpoint_progress(spark: SparkSession, checkpoint: str) -> tuple[str | None, int | None]:
    """(run id, last committed batch) of a Spark checkpoint, (None, None) if it has none."""
    _, meta, fs = _fs(spark, f"{checkpoint}/metadata")
    if not fs.exists(meta):
        return None, None
    run = json.loads(_read(spark, f"{checkpoint}/metadata").splitlines()[0])["id"].split("-")[0]
    _, commits, _ = _fs(spark, f"{checkpoint}/commits")
    # batch numbers only: a sink stopped while Spark wrote a commit leaves `.<n>.<uuid>.tmp` there
    names = [s.getPath().getName() for s in fs.listStatus(commits)] if fs.exists(commits) else []
    done = [int(n) for n in names if n.isdigit()]
    return run, max(done) if done else None


def old_rows(spark: SparkSession, table: Table, parts: dict[str, list[str]]) -> DataFrame | None:
    """The rows of the old files (``parts``: date -> files) in the Iceberg table's columns: a
    column an older file lacks reads NULL, timestamps become UTC wall-clock times."""
    frames = []
    for date, files in sorted(parts.items()):
        df = spark.read.parquet(*files)
        have = set(df.columns)
        frames.append(
            df.select(
                *[
                    (F.col(c.name) if c.name in have else F.lit(None))
                    .cast("timestamp_ntz" if c.type == "timestamp" else c.spark_type)
                    .alias(c.name)
                    for c in table.columns
                ],
                F.lit(date).alias(PARTITION_COLUMN),
            )
        )
    if not frames:
        return None
    rows = frames[0]
    for frame in frames[1:]:
        rows = rows.unionByName(frame)
    return rows


def migrate(spark: SparkSession, settings: Settings, iceberg: IcebergTables, tables: Iterable[Table], checkpoint: str):
    """Bring each table's Hive rows of the previous version into its Iceberg table, once."""
    run, last = None, None
    progress_read = False
    for table in tables:
        partitions = hive_partitions(spark, settings, table.name)
        if not partitions or iceberg.migrated(table.name):
            continue
        if not progress_read:
            run, last = checkpoint_progress(spark, checkpoint)
            progress_read = True
        parts: dict[str, list[str]] = {}
        left = 0
        for date, location in partitions:
            _, path, fs = _fs(spark, location)
            if not fs.exists(path):
                continue
            for status in fs.listStatus(path):
                name = status.getPath().getName()
                if not name.endswith(".parquet") or name.startswith((".", "_")):
                    continue
                if rerun_by_sink(name, run, last):
                    left += 1
                    continue
                parts.setdefault(date, []).append(status.getPath().toString())
        rows = old_rows(spark, table, parts)
        if rows is None:
            continue
        count = iceberg.append_migrated(rows, table.name)
        log.warning(
            "upgrade: %d rows of the Hive table %s (%d dates, %d files) brought into the Iceberg table, one commit; "
            "%d files of batches the sink runs again left to it; the old files stay in %s",
            count,
            table.name,
            len(parts),
            sum(len(f) for f in parts.values()),
            left,
            f"{settings.warehouse_url}/{table.name}",
        )
