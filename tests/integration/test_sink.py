"""The Spark sink against real Kafka, HDFS and Trino: typed records become queryable rows."""

import json
import re
import uuid
from datetime import UTC, datetime

import pytest

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
