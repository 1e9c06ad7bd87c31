"""The Spark sink against real Kafka, HDFS and Trino: typed records become queryable rows."""

import json
import re
import uuid
from datetime import UTC, datetime

import pytest

from questlog.catalog import event_key
from tests.helpers import count_when, produce, query, webhdfs_list

pytestmark = pytest.mark.integration


def test_records_on_a_typed_topic_become_rows_in_trino_and_parquet_on_hdfs(live_settings):
    run = str(uuid.uuid4())
    now = datetime.now(UTC)
    events = [
        {
            "event_id": f"{run}-{i}",
            "event_type": "purchase_sword",
            "received_at": now.isoformat(timespec="milliseconds"),
            "host": run,
            "sword_type": "katana",
            "price": 10.0 + i,
            "quantity": i,
        }
        for i in range(3)
    ]
    produce(live_settings, live_settings.topic_for("purchase_sword"), [json.dumps(e).encode() for e in events])

    assert count_when(live_settings, f"SELECT count(*) FROM sword_purchases WHERE host = '{run}'", 3) == 3
    rows = query(
        live_settings,
        f"SELECT event_id, price, quantity, dt FROM sword_purchases WHERE host = '{run}' ORDER BY event_id",
    )
    assert rows == [[f"{run}-{i}", 10.0 + i, i, now.strftime("%Y-%m-%d")] for i in range(3)]

    files = webhdfs_list(live_settings, f"{live_settings.warehouse_dir}/sword_purchases/dt={now:%Y-%m-%d}")
    assert files and all(re.fullmatch(r"part-[0-9a-f]{8}-b\d{12}-\d{4}\.parquet", f["pathSuffix"]) for f in files), (
        files
    )


def test_repeats_of_landed_records_are_dropped_in_later_batches_and_within_one(live_settings):
    """The dedupe index: a record whose (source, event_id) already landed is dropped, whether it
    comes keyed as the router writes it or without a Kafka key (its key read from its JSON), and
    two copies in one batch land once."""
    run = str(uuid.uuid4())
    topic = live_settings.topic_for("purchase_sword")
    now = datetime.now(UTC).isoformat(timespec="milliseconds")

    def event(i: int) -> bytes:
        return json.dumps(
            {
                "event_id": f"{run}-{i}",
                "source": "game-a",
                "event_type": "purchase_sword",
                "received_at": now,
                "host": run,
                "price": float(i),
            }
        ).encode()

    def key(i: int) -> bytes:
        return event_key("game-a", f"{run}-{i}")

    for i in (0, 1):
        produce(live_settings, topic, [event(i)], key=key(i))
    sql = f"SELECT count(*) FROM sword_purchases WHERE host = '{run}'"
    assert count_when(live_settings, sql, 2) == 2

    produce(live_settings, topic, [event(0)], key=key(0))  # a router re-delivery, batches later
    produce(live_settings, topic, [event(1)])  # the same event without a Kafka key
    produce(live_settings, topic, [event(2), event(2)], key=key(2))  # two copies, most likely one batch
    produce(live_settings, topic, [event(3)], key=key(3))
    assert count_when(live_settings, sql, 4) == 4
    rows = query(live_settings, f"SELECT event_id, count(*) FROM sword_purchases WHERE host = '{run}' GROUP BY 1")
    assert sorted(rows) == [[f"{run}-{i}", 1] for i in range(4)]
