"""Pure DataFrame transforms: Kafka records -> dedupe keys, and the records of one topic -> rows."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructField, StructType

from questlog.catalog import PARTITION_COLUMN, Table


def spark_schema(table: Table) -> StructType:
    return StructType([StructField(c.name, DataType.fromDDL(c.spark_type), True) for c in table.columns])


def key_fields(tables: Iterable[Table]) -> list[str]:
    """Every field some table's key is made of, in a stable order."""
    return sorted({k for table in tables for k in table.key})


def with_dedupe_key(records: DataFrame, tables: Iterable[Table], name: str = "dedupe_key") -> DataFrame:
    """``records`` (Kafka's columns) plus ``name``: the identity of each record, from its JSON,
    read in one pass (`json_tuple`) whatever the number of tables: the table's key columns
    joined by U+0001 (``source``, ``event_id`` for events; the source position for dead letters);
    the Kafka position for a record without them."""
    tables = list(tables)
    fields = key_fields(tables)
    parsed = [f"_k{i}" for i in range(len(fields))]
    out = records.select("*", F.json_tuple(F.col("value").cast("string"), *fields).alias(*parsed))
    column = dict(zip(fields, parsed, strict=True))
    key = None
    for table in tables:
        parts = F.concat_ws("\u0001", *[F.col(column[k]) for k in table.key])
        key = (
            F.when(F.col("topic") == table.topic, parts)
            if key is None
            else key.when(F.col("topic") == table.topic, parts)
        )
    key = key.otherwise(F.lit("")) if key is not None else F.lit("")
    position = F.concat_ws(":", F.lit("@"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    return out.withColumn(name, F.when(key == "", position).otherwise(key)).drop(*parsed)


def seen_bucket(bucket_s: int) -> Column:
    """The batch's time rounded down to ``bucket_s`` seconds: the dedupe state's event time. The
    watermark, and with it the eviction of old keys, moves only when a new bucket begins, so a
    batch does not trigger an extra no-data batch of its own."""
    return F.timestamp_seconds(F.floor(F.unix_timestamp(F.current_timestamp()) / bucket_s) * bucket_s)


def dedupe_timing(window_s: int) -> tuple[int, int]:
    """(bucket, watermark delay) in seconds such that a key is kept at least ``window_s`` and at
    most one bucket longer. Spark keeps a key of `dropDuplicatesWithinWatermark` until the
    watermark (latest event time - delay) passes its event time + delay, i.e. for twice the
    delay after its bucket began."""
    bucket = max(1, min(3600, window_s // 8))
    return bucket, -(-(window_s + bucket) // 2)


def to_rows(records: DataFrame, table: Table) -> DataFrame:
    """Kafka records (columns ``topic`` and ``value``) -> the table's columns in catalog order plus
    the ``dt`` partition: the UTC date of the table's time column."""
    return (
        records.where(F.col("topic") == table.topic)
        .select(F.from_json(F.col("value").cast("string"), spark_schema(table), {"mode": "PERMISSIVE"}).alias("e"))
        .select("e.*")
        .withColumn(PARTITION_COLUMN, F.date_format(F.col(table.time_column), "yyyy-MM-dd"))
        .select(*[c.name for c in table.columns], PARTITION_COLUMN)
    )
