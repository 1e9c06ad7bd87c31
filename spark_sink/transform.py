"""Pure DataFrame transforms: Kafka records -> dedupe keys, and the records of one topic -> rows."""

from __future__ import annotations

from typing import Iterable

from pyspark.sql import Column, DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType, _parse_datatype_string

from questlog.catalog import PARTITION_COLUMN, Table


def spark_schema(table: Table) -> StructType:
    return StructType([StructField(c.name, _parse_datatype_string(c.spark_type), True) for c in table.columns])


def dedupe_key(tables: Iterable[Table]) -> Column:
    """The identity of a record, from its JSON: the table's key columns (``event_id`` for events,
    the source position for dead letters); the Kafka position for a record without them."""
    value = F.col("value").cast("string")
    position = F.concat_ws(":", F.lit("@"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    key = None
    for table in tables:
        parts = F.concat_ws("\u0001", *[F.get_json_object(value, f"$.{k}") for k in table.key])
        key = (F.when(F.col("topic") == table.topic, parts) if key is None
               else key.when(F.col("topic") == table.topic, parts))
    key = key.otherwise(F.lit("")) if key is not None else F.lit("")
    return F.when(key == "", position).otherwise(key)


def to_rows(records: DataFrame, table: Table) -> DataFrame:
    """Kafka records (columns ``topic`` and ``value``) -> the table's columns in catalog order plus
    the ``dt`` partition: the UTC date of the table's time column."""
    return (
        records.where(F.col("topic") == table.topic)
        .select(F.from_json(F.col("value").cast("string"), spark_schema(table),
                            {"mode": "PERMISSIVE"}).alias("e"))
        .select("e.*")
        .withColumn(PARTITION_COLUMN, F.date_format(F.col(table.time_column), "yyyy-MM-dd"))
        .select(*[c.name for c in table.columns], PARTITION_COLUMN)
    )
