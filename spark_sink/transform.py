"""Pure DataFrame transforms: Kafka records -> dedupe keys, and the records of one topic -> rows."""

from __future__ import annotations

from collections.abc import Iterable

from pyspark.sql import DataFrame
from pyspark.sql import functions as F
from pyspark.sql.types import DataType, StructField, StructType

from questlog.catalog import PARTITION_COLUMN, Table


def spark_schema(table: Table) -> StructType:
    return StructType([StructField(c.name, DataType.fromDDL(c.spark_type), True) for c in table.columns])


def with_dedupe_key(records: DataFrame, tables: Iterable[Table], name: str = "dedupe_key") -> DataFrame:
    """``records`` (Kafka's columns) plus ``name``: the identity of each record, the table's key
    columns joined by U+0001 (``source``, ``event_id`` for events; the source position for dead
    letters). It is read from the record's Kafka key, where the router put the same columns joined
    by the table's ``key_separator`` (`event_key`, `dead_letter_key`): no JSON parse. A record
    without a Kafka key has its key columns read from its JSON; one without either is identified by
    its own Kafka position. Either way a record gets the same string, so a repeat is recognised
    whether or not its copy was keyed."""
    kafka_key = F.col("key").cast("string")
    value = F.col("value").cast("string")
    from_key = from_json = None
    for table in tables:
        is_table = F.col("topic") == table.topic
        by_key = F.translate(kafka_key, table.key_separator, "\u0001")
        by_json = F.concat_ws("\u0001", *[F.get_json_object(value, f"$.{k}") for k in table.key])
        from_key = F.when(is_table, by_key) if from_key is None else from_key.when(is_table, by_key)
        from_json = F.when(is_table, by_json) if from_json is None else from_json.when(is_table, by_json)
    key = (
        F.lit(None)
        if from_key is None or from_json is None
        else F.when(kafka_key.isNotNull(), from_key).otherwise(from_json)
    )
    position = F.concat_ws(":", F.lit("@"), F.col("partition").cast("string"), F.col("offset").cast("string"))
    return records.withColumn(name, F.when(F.coalesce(key, F.lit("")) == "", position).otherwise(key))


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
