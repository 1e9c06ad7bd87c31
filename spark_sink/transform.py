"""Pure DataFrame transforms: Kafka records of one topic -> rows of one table."""

from __future__ import annotations

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import StructField, StructType, _parse_datatype_string

from questlog.catalog import PARTITION_COLUMN, Table


def spark_schema(table: Table) -> StructType:
    return StructType([StructField(c.name, _parse_datatype_string(c.spark_type), True) for c in table.columns])


def to_rows(records: DataFrame, table: Table) -> DataFrame:
    """Kafka records (columns ``topic`` and ``value``) -> the table's columns in catalog order plus
    the ``dt`` partition (UTC date of the table's time column), one row per key."""
    parsed = (
        records.where(F.col("topic") == table.topic)
        .select(F.from_json(F.col("value").cast("string"), spark_schema(table),
                            {"mode": "PERMISSIVE"}).alias("e"))
        .select("e.*")
        .dropDuplicates(list(table.key))
        .withColumn(PARTITION_COLUMN, F.date_format(F.col(table.time_column), "yyyy-MM-dd"))
    )
    return parsed.select(*[c.name for c in table.columns], PARTITION_COLUMN)
