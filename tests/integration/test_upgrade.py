"""Upgrading from the previous version's Hive tables (spark_sink/migrate.py): the rows it landed,
laid out on HDFS as it laid them out (Hive-style parquet partitions registered in Trino's file
metastore, one partition moved to a compacted generation), come into the Iceberg table once when
the sink starts, and never twice when it starts again."""

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
from ops.stack import services
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


def test_the_hive_tables_rows_come_in_once_and_a_batch_the_sink_runs_again_is_left_to_it(pipeline):
    s = pipeline.settings
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

    restart_sink(pipeline)
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


# The dead letters' table as the previous version made it (no `reason_code`), with a dead letter it
# wrote; then the sink's start (IcebergTables.ensure with today's catalog) and a dead letter of
# today's router. In a schema of its own, on a Spark session of its own.
DEAD_LETTER_UPGRADE = """
import dataclasses, json, sys
from questlog.catalog import DEAD_LETTER_TABLE, load_catalog
from questlog.settings import Settings
from spark_sink.session import catalog_session
from spark_sink.tables import IcebergTables
from spark_sink.transform import to_rows

settings = Settings.from_env().replace(trino_schema=sys.argv[1])
spark = catalog_session(settings, "local[1]")
table = next(t for t in load_catalog(settings.catalog).tables(settings.raw_topic, settings.dlq_topic)
             if t.name == DEAD_LETTER_TABLE)
before = dataclasses.replace(table, columns=tuple(c for c in table.columns if c.name != "reason_code"))
iceberg = IcebergTables(spark, settings)

def letter(offset, **extra):
    return json.dumps({"reason": "field 'price': expected double, got string 'a lot'", "raw": "{}",
                       "source_topic": "events", "source_partition": 0, "source_offset": offset,
                       "failed_at": "2026-01-02T03:04:05.000+00:00", **extra}).encode()

def land(t, value, batch_id):
    records = spark.createDataFrame([(t.topic, value)], "topic string, value binary")
    iceberg.append(to_rows(records, t), DEAD_LETTER_TABLE, "upgrade-test", batch_id)

iceberg.ensure([before])
land(before, letter(1), 1)  # the previous router's dead letter, the previous sink's table
iceberg.ensure([table])  # the upgrade: what the sink does as it starts
land(table, letter(2, reason="field 'colour': not in the 'x' schema", reason_code="unknown_field"), 2)
spark.stop()
"""


def test_the_dead_letters_table_gains_the_reason_code_column_on_upgrade(live_settings):
    """A dead-letter table from before reason codes gains the `reason_code` column by Iceberg schema
    evolution when the sink starts: its old rows read NULL (status codes them from their text), new
    rows carry their code, and `questlog status` counts both by code."""
    import os
    import subprocess
    import sys

    from ops import status
    from ops.stack.java import find_java, java_home

    schema = f"upgrade_{uuid.uuid4().hex[:8]}"
    env = {
        **os.environ,
        **live_settings.to_env(),
        "JAVA_HOME": java_home(find_java(17, 21)),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-c", DEAD_LETTER_UPGRADE, schema], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    s = live_settings.replace(trino_schema=schema)
    columns = [row[0] for row in query(s, "DESCRIBE dead_letters")]
    assert columns.index("reason_code") > columns.index("source_index")  # added at the end
    assert query(s, "SELECT source_offset, reason_code FROM dead_letters ORDER BY 1") == [
        [1, None],
        [2, "unknown_field"],
    ]
    now = datetime(2026, 1, 2, 3, 30, tzinfo=UTC)
    assert status._dead_letters(s, "dead_letters", now) == {"wrong_type": 1, "unknown_field": 1}
