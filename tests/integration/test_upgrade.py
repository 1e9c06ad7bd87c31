"""Upgrading from the previous versions. Their Hive tables (spark_sink/migrate.py): the rows it landed,
laid out on HDFS as it laid them out (Hive-style parquet partitions registered in Trino's file
metastore, one partition moved to a compacted generation), come into the Iceberg table once when
the sink starts, and never twice when it starts again. Their dead letters' table, without
`reason_code`: the sink adds the column as it starts (spark_sink.tables.IcebergTables.ensure)."""

from __future__ import annotations

import io
import json
import random
import uuid
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from compactor.compact import literal
from ops import status
from ops.stack import services
from questlog.sql import execute
from spark_sink.migrate import METASTORE_DIR
from tests.helpers import query, settle, wait_for

pytestmark = pytest.mark.integration

TABLE = "level_ups"


def parquet(ids: list[str], at: datetime, level: int | None) -> bytes:
    """A file as the old sink or compactor wrote it: timestamps INT64 microseconds, UTC."""
    columns = {
        "event_id": pa.array(ids),
        "source": pa.array(["old"] * len(ids)),
        "event_type": pa.array(["level_up"] * len(ids)),
        "received_at": pa.array([at] * len(ids), pa.timestamp("us", tz="UTC")),
    }
    if level is not None:  # a file of an older schema lacks a column
        columns["level"] = pa.array([level] * len(ids), pa.int64())
    buf = io.BytesIO()
    pq.write_table(pa.table(columns), buf, coerce_timestamps="us")
    return buf.getvalue()


def put(settings, path: str, data: bytes) -> None:
    from hdfs import InsecureClient

    InsecureClient(settings.webhdfs_url, user="questlog").write(path, data=data, overwrite=True)


def restart_sink(pipeline) -> None:
    svc = services.sink(pipeline.settings)
    pipeline.supervisor.stop("sink", timeout_s=60)
    pipeline.supervisor.start(svc)
    pipeline.supervisor.wait_healthy(svc)


def test_an_upgrade_brings_the_hive_rows_in_once_and_gives_the_dead_letters_their_reason_code(pipeline):
    """The sink started on the previous version's state: the Hive tables' rows come in once (a
    batch the sink runs again is left to it), and the dead letters' table of before reason codes
    gains `reason_code` by Iceberg schema evolution: its old rows read NULL (status codes them
    from their text), new dead letters carry their code."""
    s = pipeline.settings
    old_letter = dead_letter(s)  # landed by the running pipeline; its column dropped below
    run = uuid.uuid4().hex[:8]
    day = datetime(2001, 1, 1, 12, tzinfo=UTC) + timedelta(days=random.randrange(3000))
    d1, d2 = f"{day:%Y-%m-%d}", f"{day + timedelta(days=1):%Y-%m-%d}"
    warehouse, meta = f"{s.warehouse_dir}/{TABLE}", f"{METASTORE_DIR}/{s.trino_schema}/{TABLE}"
    # date 1: where the old sink put it; date 2: a generation its compactor switched the partition to
    put(s, f"{warehouse}/dt={d1}/part-0ld0c4ec-b000000000003-0000.parquet", parquet([f"{run}-a", f"{run}-b"], day, 7))
    put(s, f"{warehouse}/dt={d1}/part-0ld0c4ec-b000000000004-0000.parquet", parquet([f"{run}-c"], day, None))
    put(s, f"{warehouse}/_gen/dt={d2}/g1/c-0000.parquet", parquet([f"{run}-d"], day + timedelta(days=1), 9))
    put(s, f"{warehouse}/dt={d2}/part-0ld0c4ec-b000000000002-0000.parquet", parquet([f"{run}-stale"], day, 1))
    put(s, f"{meta}/dt={d1}/.trinoSchema", json.dumps({"columns": []}).encode())
    location = f"{s.hdfs_url}{warehouse}/_gen/dt={d2}/g1"
    put(s, f"{meta}/dt={d2}/.trinoSchema", json.dumps({"externalLocation": location}).encode())
    # a batch the current checkpoint has not committed: the sink runs it again itself, so left out
    settle(s)  # the sink has committed at least one batch: its checkpoint's run is in a snapshot
    checkpoint_run = query(
        s,
        "SELECT element_at(summary, 'questlog.checkpoint') FROM \"default_hits$snapshots\" "
        "WHERE element_at(summary, 'questlog.checkpoint') IS NOT NULL LIMIT 1",
    )[0][0]
    put(
        s,
        f"{warehouse}/dt={d1}/part-{checkpoint_run}-b999999999999-0000.parquet",
        parquet([f"{run}-rerun"], day, 1),
    )

    pipeline.supervisor.stop("sink", timeout_s=60)
    # the dead letters' table as the previous version had it: no reason_code (dropped as the compactor's user)
    execute(s, "ALTER TABLE dead_letters DROP COLUMN reason_code", user=s.compact_trino_user)
    restart_sink(pipeline)  # the upgrade: the sink starts on the previous version's tables
    sql = f"SELECT event_id, level, received_at, dt FROM {TABLE} WHERE event_id LIKE {literal(run + '-%')} ORDER BY 1"
    rows = wait_for(lambda: query(s, sql), 120, 1.0, what="the migrated rows")
    naive = day.replace(tzinfo=None)
    assert rows == [
        [f"{run}-a", 7, naive, d1],
        [f"{run}-b", 7, naive, d1],
        [f"{run}-c", None, naive, d1],  # an older file without the column
        [f"{run}-d", 9, naive + timedelta(days=1), d2],  # from the compacted generation, not the stale directory
    ]
    marks = query(
        s, f"SELECT count(*) FROM \"{TABLE}$snapshots\" WHERE element_at(summary, 'questlog.migrated-from') = 'hive'"
    )
    assert marks == [[1]]

    restart_sink(pipeline)  # and again: nothing twice
    assert query(s, sql) == rows
    assert query(
        s, f"SELECT count(*) FROM \"{TABLE}$snapshots\" WHERE element_at(summary, 'questlog.migrated-from') = 'hive'"
    ) == [[1]]

    # the dead letters' upgrade, done by the same start of the sink
    columns = [row[0] for row in query(s, "DESCRIBE dead_letters")]
    assert columns.index("reason_code") > columns.index("source_index")  # added at the end
    assert query(s, f"SELECT reason_code FROM dead_letters WHERE event_id = {literal(old_letter)}") == [[None]]
    new_letter = dead_letter(s)
    assert query(s, f"SELECT reason_code FROM dead_letters WHERE event_id = {literal(new_letter)}") == [["wrong_type"]]
    now = datetime.now(UTC)
    counted = status._dead_letters(s, "dead_letters", now)  # the old row coded from its text
    assert counted.get("wrong_type", 0) >= 2 and None not in counted


def dead_letter(settings) -> str:
    """The event_id of a dead letter (a price that is no number) once it is in the table."""
    import requests

    event_id = f"upgrade-{uuid.uuid4()}"
    body = {"event_type": "purchase_sword", "event_id": event_id, "price": "a lot"}
    assert requests.post(f"{settings.collector_url}/events", json=body, timeout=30).status_code == 202
    sql = f"SELECT count(*) FROM dead_letters WHERE event_id = {literal(event_id)}"
    wait_for(lambda: query(settings, sql) == [[1]], 120, 1.0, what="the dead letter")
    return event_id
