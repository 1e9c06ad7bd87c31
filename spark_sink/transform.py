"""Pure DataFrame transforms: Kafka records -> the dedupe keys of keyless records, and the records of one
topic -> rows."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructField, StructType

from questlog.catalog import PARTITION_COLUMN, Table


def spark_schema(table: Table) -> StructType:
    return StructType([StructField(c.name, DataType.fromDDL(c.spark_type), True) for c in table.columns])


def with_fallback_key(records: DataFrame, tables: Iterable[Table], name: str = "fallback_key") -> DataFrame:
    """``records`` (Kafka's columns) plus ``name``: for a record without a Kafka key, its table's
    key columns read from its JSON and joined by U+0001 (``source``, ``event_id`` for events),
    NULL for every other record. A keyed record's dedupe key is its Kafka key, made on the driver
    (`spark_sink.dedupe.dedupe_keys`): the expression is evaluated only for the rare records
    without one, so the common record costs one null check here."""
    value = F.col("value").cast("string")
    from_json = None
    for table in tables:
        is_table = F.col("topic") == table.topic
        by_json = F.concat_ws("\u0001", *[F.get_json_object(value, f"$.{k}") for k in table.key])
        from_json = F.when(is_table, by_json) if from_json is None else from_json.when(is_table, by_json)
    return records.withColumn(
        name, F.lit(None).cast("string") if from_json is None else F.when(F.col("key").isNull(), from_json)
    )


def to_rows(records: DataFrame, table: Table) -> DataFrame:
    """Kafka records (columns ``topic`` and ``value``) -> the table's columns in catalog order plus
    the ``dt`` partition: the UTC date of the table's time column. Timestamps are read with their
    zone and kept as UTC wall-clock times without one (the session's zone is UTC): Iceberg's
    `timestamp`, Trino's timestamp(6)."""
    columns = [
        F.col(c.name).cast("timestamp_ntz").alias(c.name) if c.type == "timestamp" else F.col(c.name)
        for c in table.columns
    ]
    return (
        records.where(F.col("topic") == table.topic)
        .select(F.from_json(F.col("value").cast("string"), spark_schema(table), {"mode": "PERMISSIVE"}).alias("e"))
        .select("e.*")
        .withColumn(PARTITION_COLUMN, F.date_format(F.col(table.time_column), "yyyy-MM-dd"))
        .select(*columns, PARTITION_COLUMN)
    )
