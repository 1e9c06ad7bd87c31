"""The sink's transform on a small local SparkSession (no Kafka, no HDFS)."""

import datetime as dt
import json
import os

import pytest
from pyspark.testing import assertDataFrameEqual

from questlog.catalog import DEAD_LETTER_TABLE
from questlog.stack.java import find_java, java_home
from spark_sink.transform import to_rows


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("JAVA_HOME", java_home(find_java(17, 21, purpose="Spark")))
    from pyspark.sql import SparkSession

    session = (SparkSession.builder.master("local[1]").appName("questlog-unit")
               .config("spark.ui.enabled", "false").config("spark.sql.shuffle.partitions", "1")
               .config("spark.sql.session.timeZone", "UTC").getOrCreate())
    yield session
    session.stop()


def records(spark, *items):
    return spark.createDataFrame([(topic, json.dumps(v).encode()) for topic, v in items], "topic string, value binary")


def test_rows_of_one_topic_in_catalog_order_with_a_utc_date_partition_and_no_duplicates(spark, catalog):
    table = {t.name: t for t in catalog.tables()}["sword_purchases"]
    event = {"event_id": "a", "event_type": "purchase_sword", "received_at": "2026-11-29T23:30:00.000-02:00",
             "host": "h", "price": 3, "sword_type": "katana"}
    df = records(spark, ("events.purchase_sword", event), ("events.purchase_sword", event),
                 ("events.join_guild", {**event, "event_id": "b", "event_type": "join_guild"}))
    rows = to_rows(df, table)
    expected = spark.createDataFrame(
        [("a", "purchase_sword", dt.datetime(2026, 11, 30, 1, 30), "h", None, None, "katana", 3.0, None, None,
          "2026-11-30")],
        "event_id string, event_type string, received_at timestamp, host string, user_agent string, "
        "accept string, sword_type string, price double, currency string, quantity bigint, dt string")
    assertDataFrameEqual(rows, expected)


def test_dead_letters_are_deduplicated_by_source_position(spark, catalog):
    table = {t.name: t for t in catalog.tables()}[DEAD_LETTER_TABLE]
    letter = {"reason": "r", "raw": "x", "source_topic": "events", "source_partition": 0, "source_offset": 7,
              "failed_at": "2026-11-29T10:00:00.000+00:00"}
    df = records(spark, ("events.dlq", letter), ("events.dlq", letter),
                 ("events.dlq", {**letter, "source_offset": 8}))
    rows = to_rows(df, table).collect()
    assert sorted(r.source_offset for r in rows) == [7, 8]
    assert {r.dt for r in rows} == {"2026-11-29"}
