"""The sink's transforms on a small local SparkSession (no Kafka, no HDFS)."""

import datetime as dt
import json
import os

import pytest
from pyspark.testing import assertDataFrameEqual

from faust_app.routing import Source, route
from ops.stack.java import find_java, java_home
from spark_sink.dedupe import dedupe_keys
from spark_sink.transform import to_rows, with_fallback_key


@pytest.fixture(scope="session")
def spark():
    os.environ.setdefault("JAVA_HOME", java_home(find_java(17, 21, purpose="Spark")))
    from pyspark.sql import SparkSession

    session = (
        SparkSession.builder.master("local[1]")
        .appName("questlog-unit")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "1")
        .config("spark.sql.session.timeZone", "UTC")
        .getOrCreate()
    )
    yield session
    session.stop()


@pytest.fixture(scope="session")
def tables(catalog):
    return {t.name: t for t in catalog.tables()}


def records(spark, *items):
    """Kafka records from (topic, value) or (topic, value, key) items."""
    rows = [
        (
            item[0],
            item[1] if isinstance(item[1], bytes) else json.dumps(item[1]).encode(),
            (item[2:] or (None,))[0],
            0,
            n,
        )
        for n, item in enumerate(items)
    ]
    return spark.createDataFrame(rows, "topic string, value binary, key binary, partition int, offset long")


def keys_of(df, tables) -> list[str]:
    """Each record's dedupe key as the sink makes it: the JSON's key for keyless records in Spark,
    then every key on the driver from the batch's Arrow columns; in offset order."""
    ids = with_fallback_key(df, tables).select("topic", "key", "fallback_key", "partition", "offset").toArrow()
    keys = dedupe_keys(ids, {t.topic: t.key_separator for t in tables}).to_pylist()
    return [k.decode() for _, k in sorted(zip(ids.column("offset").to_pylist(), keys, strict=True))]


def test_rows_of_one_topic_in_catalog_order_with_a_utc_date_partition(spark, tables):
    event = {
        "event_id": "a",
        "event_type": "purchase_sword",
        "received_at": "2026-11-29T23:30:00.000-02:00",
        "host": "h",
        "price": 3,
        "sword_type": "katana",
        "schema_version": 1,
        "user_id": "u1",
    }
    df = records(
        spark,
        ("events.purchase_sword", event),
        ("events.join_guild", {**event, "event_id": "b", "event_type": "join_guild"}),
    )
    expected = spark.createDataFrame(
        [
            (
                "a",
                None,
                "purchase_sword",
                dt.datetime(2026, 11, 30, 1, 30),
                None,
                "u1",
                1,
                "h",
                None,
                None,
                "katana",
                None,
                3.0,
                None,
                None,
                "2026-11-30",
            )
        ],
        "event_id string, source string, event_type string, received_at timestamp_ntz, client_ts timestamp_ntz, "
        "user_id string, "
        "schema_version bigint, host string, user_agent string, accept string, sword_type string, "
        "rarity string, price double, currency string, quantity bigint, dt string",
    )
    assertDataFrameEqual(to_rows(df, tables["sword_purchases"]), expected)


def test_dedupe_keys_are_source_and_event_id_or_source_positions(spark, tables):
    letter = {
        "reason": "r",
        "raw": "x",
        "source_topic": "events",
        "source_partition": 0,
        "source_offset": 7,
        "failed_at": "2026-11-29T10:00:00.000+00:00",
    }
    df = records(
        spark,
        ("events.purchase_sword", {"event_id": "e-1"}),
        ("events.dlq", letter),
        ("events.level_up", {"source": "game-a", "event_id": "e-9", "level": 3}),
        ("events.purchase_sword", b"{}"),
        ("events.unknown", {"event_id": "e-2"}),
    )
    keys = keys_of(df, tables.values())
    # The same strings as before json_tuple read them: a running sink's dedupe state still matches.
    assert keys == ["e-1", "events\u00010\u00017", "game-a\u0001e-9", "@:0:3", "@:0:4"]


def test_dedupe_keys_from_the_routers_kafka_keys_are_the_keys_read_from_json(spark, catalog, tables):
    """The sink reads a record's key from its Kafka key (no JSON parse); for what the router
    writes it is the very string the JSON gives, so a dedupe state built either way matches."""
    envelopes = [
        {
            "event_id": "e-1:x.y_z-9",
            "source": "game-a",
            "event_type": "purchase_sword",
            "received_at": "2026-11-29T10:00:00Z",
        },
        {"event_id": "e-2", "event_type": "purchase_sword", "received_at": "2026-11-29T10:00:00Z"},  # no source
        {"event_id": "e-3", "source": "game-b", "event_type": "purchase_sword", "price": "not a number"},  # dead letter
    ]
    routed = [
        route(json.dumps(e).encode(), Source("events", 2, n), catalog, "events", "events.dlq")
        for n, e in enumerate(envelopes)
    ]
    assert [r.dead for r in routed] == [False, False, True]
    with_keys = records(spark, *[(r.topic, r.value, r.key) for r in routed])
    without = records(spark, *[(r.topic, r.value) for r in routed])
    from_kafka = keys_of(with_keys, tables.values())
    from_json = keys_of(without, tables.values())
    assert from_kafka == from_json == ["game-a\u0001e-1:x.y_z-9", "e-2", "events\u00012\u00012"]


def test_two_sources_with_the_same_event_id_are_two_records(spark, tables):
    df = records(
        spark,
        ("events.purchase_sword", {"source": "game-a", "event_id": "1"}),
        ("events.purchase_sword", {"source": "game-b", "event_id": "1"}),
        ("events.purchase_sword", {"source": "game-a", "event_id": "1"}),
    )
    keys = keys_of(df, tables.values())
    assert keys == ["game-a\u00011", "game-b\u00011", "game-a\u00011"]


def test_an_empty_kafka_key_or_a_topic_without_a_table_is_identified_by_its_position(spark, tables):
    df = records(
        spark,
        ("events.purchase_sword", {"source": "game-a", "event_id": "e-1"}, b""),  # empty, not missing: no JSON look-up
        ("events.unknown", {"event_id": "e-2"}, b"game-a/e-2"),
        ("events.level_up", {"event_id": "ignored"}, b"game-a/e-3"),  # the Kafka key wins over the JSON
    )
    assert keys_of(df, tables.values()) == ["@:0:0", "@:0:1", "game-a\u0001e-3"]


@pytest.mark.parametrize(
    "offsets,commits,pending",
    [([0, 1, 2], [0, 1], 2), ([0, 1, 2], [0, 1, 2], None), ([], [], None), ([0], [], 0)],
)
def test_the_batch_spark_runs_again_is_the_planned_one_never_committed(spark, tmp_path, offsets, commits, pending):
    from spark_sink.job import pending_batch

    for log, batches in (("offsets", offsets), ("commits", commits)):
        (tmp_path / log).mkdir()
        for b in batches:
            (tmp_path / log / str(b)).write_text("v1\n")
    (tmp_path / "offsets" / ".0.crc").write_text("")  # Hadoop's checksum files are not batches
    assert pending_batch(spark, f"file://{tmp_path}") == pending
