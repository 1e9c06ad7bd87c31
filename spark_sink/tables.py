"""The Iceberg tables of what the sink lands: created, evolved and committed to through the catalog.

Every table is an Iceberg table (format 2, parquet files on HDFS under
``<warehouse>/<schema>/<table>``) partitioned by ``dt``, the UTC date of its time column, so queries
that filter on the date read only that day's files. Tables are created, and columns the deployed
catalog added are added, by the sink through Spark's Iceberg catalog, the one Trino reads: nobody
writes DDL by hand. A column is only ever added (old rows read NULL); the event catalog refuses
every other change before it is deployed (questlog/catalog/evolution.py).

Each micro-batch lands each table as ONE Iceberg commit (an append), whose snapshot summary names
the checkpoint and the batch (``questlog.checkpoint``, ``questlog.batch``): a batch that Spark runs
again after a crash finds the tables it committed already and does not commit them twice.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from pyspark.sql import DataFrame, SparkSession

from questlog.catalog import PARTITION_COLUMN, Table
from questlog.settings import Settings

CHECKPOINT_PROPERTY = "questlog.checkpoint"
BATCH_PROPERTY = "questlog.batch"
MIGRATED_PROPERTY = "questlog.migrated-from"  # the commit that brought the Hive tables' rows in (migrate.py)

# Spark SQL types of the catalog's: timestamps are Iceberg's `timestamp` (no zone, UTC wall
# clock), Trino's timestamp(6), as the Hive tables' timestamp(3) before them.
SPARK_TYPES: Mapping[str, str] = {
    "string": "string",
    "long": "bigint",
    "double": "double",
    "boolean": "boolean",
    "timestamp": "timestamp_ntz",
}

# Table properties (Iceberg's names). Metadata stays small under a commit every 2 s: old
# metadata.json files are deleted after each commit beyond the last few, manifests are merged on
# append, and the compactor expires snapshots and removes files no snapshot names.
TABLE_PROPERTIES: Mapping[str, str] = {
    "format-version": "2",
    "write.format.default": "parquet",
    "write.parquet.compression-codec": "snappy",
    # a batch's rows go out as they are (no shuffle to cluster them by date first); one task may
    # write several dates (a fan-out writer per task)
    "write.distribution-mode": "none",
    "write.spark.fanout.enabled": "true",
    "write.metadata.delete-after-commit.enabled": "true",
    "write.metadata.previous-versions-max": "10",
    "commit.manifest-merge.enabled": "true",
    "commit.manifest.min-count-to-merge": "20",
}


def quote(identifier: str) -> str:
    return "`" + identifier.replace("`", "``") + "`"


def qualified(settings: Settings, table: str) -> str:
    return f"{quote(settings.trino_catalog)}.{quote(settings.trino_schema)}.{quote(table)}"


def table_location(settings: Settings, table: str) -> str:
    return f"{settings.warehouse_url}/{settings.trino_schema}/{table}"


def column_sql(name: str, type_: str) -> str:
    return f"{quote(name)} {SPARK_TYPES[type_]}"


def create_table_sql(settings: Settings, table: Table) -> str:
    columns = ",\n  ".join(column_sql(c.name, c.type) for c in table.columns)
    props = ", ".join(f"'{k}' = '{v}'" for k, v in TABLE_PROPERTIES.items())
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(settings, table.name)} (\n  {columns},\n"
        f"  {quote(PARTITION_COLUMN)} string\n) USING iceberg\nPARTITIONED BY ({quote(PARTITION_COLUMN)})\n"
        f"LOCATION '{table_location(settings, table.name)}'\nTBLPROPERTIES ({props})"
    )


def missing_columns_sql(settings: Settings, table: Table, existing: Iterable[str]) -> list[str]:
    """ALTER statements adding catalog columns the table lacks (old rows read them as NULL)."""
    have = set(existing)
    return [
        f"ALTER TABLE {qualified(settings, table.name)} ADD COLUMNS ({column_sql(c.name, c.type)})"
        for c in table.columns
        if c.name not in have
    ]


class IcebergTables:
    """The sink's tables in the Iceberg catalog of a session that has it (spark_sink.session)."""

    def __init__(self, spark: SparkSession, settings: Settings) -> None:
        self.spark, self.settings = spark, settings

    def ensure(self, tables: Iterable[Table], log=None) -> None:
        """Create the schema and each table, and add the columns the catalog added since."""
        s = self.settings
        self.spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {quote(s.trino_catalog)}.{quote(s.trino_schema)}")
        for table in tables:
            self.spark.sql(create_table_sql(s, table))
            existing = [f.name for f in self.spark.table(qualified(s, table.name)).schema.fields]
            for sql in missing_columns_sql(s, table, existing):
                if log is not None:
                    log.info("schema change: %s", sql)
                self.spark.sql(sql)

    def committed(self, table: str, checkpoint: str) -> int | None:
        """The last batch of ``checkpoint`` the table committed (from its snapshots' summaries), or None."""
        row = self.spark.sql(
            f"SELECT max(CAST(summary['{BATCH_PROPERTY}'] AS BIGINT)) FROM {qualified(self.settings, table)}.snapshots "
            f"WHERE summary['{CHECKPOINT_PROPERTY}'] = '{checkpoint}'"
        ).first()
        return None if row is None or row[0] is None else int(row[0])

    def migrated(self, table: str) -> bool:
        """Whether the table has the commit that brought the previous version's rows in."""
        return bool(
            self.spark.sql(
                f"SELECT 1 FROM {qualified(self.settings, table)}.snapshots "
                f"WHERE summary['{MIGRATED_PROPERTY}'] IS NOT NULL LIMIT 1"
            ).first()
        )

    def append_migrated(self, rows: DataFrame, table: str) -> int:
        """The previous version's rows as one commit marked as the migration's: how many."""
        count = rows.count()
        rows.writeTo(qualified(self.settings, table)).option(f"snapshot-property.{MIGRATED_PROPERTY}", "hive").append()
        return count

    def append(self, rows: DataFrame, table: str, checkpoint: str, batch_id: int) -> None:
        """``rows`` as one commit to ``table``, its snapshot naming the checkpoint and batch (the data
        files it added: ``added_files``)."""
        (
            rows.writeTo(qualified(self.settings, table))
            .option(f"snapshot-property.{CHECKPOINT_PROPERTY}", checkpoint)
            .option(f"snapshot-property.{BATCH_PROPERTY}", str(batch_id))
            .append()
        )

    def added_files(self, table: str, checkpoint: str, batch_id: int) -> int:
        """The data files the commit of ``batch_id`` added to ``table`` (0 if it is not among the
        last few snapshots), read from the table's metadata by Iceberg's Java API."""
        jvm = self.spark.sparkContext._jvm
        assert jvm is not None
        loaded = jvm.org.apache.iceberg.spark.Spark3Util.loadIcebergTable(
            self.spark._jsparkSession, f"{self.settings.trino_catalog}.{self.settings.trino_schema}.{table}"
        )
        snapshot = loaded.currentSnapshot()
        for _ in range(5):  # the compactor may have committed after it
            if snapshot is None:
                return 0
            summary = snapshot.summary()
            if summary.get(CHECKPOINT_PROPERTY) == checkpoint and summary.get(BATCH_PROPERTY) == str(batch_id):
                return int(summary.get("added-data-files") or 0)
            parent = snapshot.parentId()
            snapshot = loaded.snapshot(parent) if parent is not None else None
        return 0
