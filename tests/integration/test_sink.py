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

    # parquet data files of an Iceberg table on HDFS, under its date partition
    location = f"{live_settings.warehouse_dir}/{live_settings.trino_schema}/sword_purchases/data/dt={now:%Y-%m-%d}"
    files = webhdfs_list(live_settings, location)
    assert files and all(f["pathSuffix"].endswith(".parquet") for f in files), files
    paths = query(live_settings, 'SELECT file_path FROM "sword_purchases$files"')
    assert {f["pathSuffix"] for f in files} <= {p[0].rsplit("/", 1)[1] for p in paths}
    # every commit of the sink names its checkpoint and batch
    summaries = query(
        live_settings,
        "SELECT element_at(summary, 'questlog.checkpoint'), element_at(summary, 'questlog.batch') "
        "FROM \"sword_purchases$snapshots\" WHERE operation = 'append'",
    )
    assert summaries and all(re.fullmatch(r"[0-9a-f]{8}", c) and b.isdigit() for c, b in summaries), summaries


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


SPARK_READ = """
import json, sys
from questlog.settings import Settings
from spark_sink.session import catalog_session
settings = Settings.from_env()
spark = catalog_session(settings, "local[1]")
names = sys.argv[1:]
print("COUNTS " + json.dumps({n: spark.table(f"{settings.trino_catalog}.{settings.trino_schema}.{n}").count() for n in names}))
spark.stop()
"""


def test_spark_reads_every_table_through_the_catalog_trino_reads(live_settings):
    """A Spark session of its own (spark_sink.session.catalog_session, the documented way) reads
    every table of the catalog through the JDBC catalog, and counts what Trino counts."""
    import os
    import subprocess
    import sys

    from ops.stack.java import find_java, java_home
    from questlog.catalog import load_catalog
    from tests.helpers import settle

    settle(live_settings)
    live = load_catalog(live_settings.catalog)  # with the types end-to-end tests deployed
    names = [t.name for t in live.tables(live_settings.raw_topic, live_settings.dlq_topic)]
    env = {
        **os.environ,
        **live_settings.to_env(),
        "JAVA_HOME": java_home(find_java(17, 21)),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    done = subprocess.run(
        [sys.executable, "-c", SPARK_READ, *names], env=env, capture_output=True, text=True, timeout=600
    )
    assert done.returncode == 0, done.stderr[-3000:]
    counts = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("COUNTS "))[7:])
    trino = {n: query(live_settings, f'SELECT count(*) FROM "{n}"')[0][0] for n in names}
    assert counts == trino and set(counts) == set(names)
    assert counts["sword_purchases"] > 0


# The sink's Lander on a Spark session of its own, against the live catalog in a schema of its own,
# with a private copy of the deployed catalog (other tests deploy changes meanwhile).
RERUN = """
import json, sys, tempfile
from pathlib import Path
from questlog.catalog import load_catalog
from questlog.catalog.watch import CatalogSource
from questlog.settings import Settings
from spark_sink.dedupe import DedupeIndex
from spark_sink.job import Lander
from spark_sink.session import catalog_session
from spark_sink.tables import IcebergTables
from spark_sink.transform import with_fallback_key

import shutil
private = Path(tempfile.mkdtemp()) / "catalog.json"  # deploys by other tests do not reach it
shutil.copy(Settings.from_env().catalog, private)
settings = Settings.from_env().replace(trino_schema=sys.argv[1], catalog=str(private))
spark = catalog_session(settings, "local[1]")
source = CatalogSource(settings.catalog)
catalog = source.get()
tables = catalog.tables(settings.raw_topic, settings.dlq_topic)
iceberg = IcebergTables(spark, settings)
iceberg.ensure(tables)
index = DedupeIndex(Path(tempfile.mkdtemp()) / "index", 3600)
topic = settings.topic_for("purchase_sword")
values = [json.dumps({"event_id": f"r-{i}", "source": "s", "event_type": "purchase_sword",
          "received_at": "2026-01-02T03:04:05.000+00:00", "price": 1.0}) for i in range(5)]
records = with_fallback_key(spark.createDataFrame(
    [(topic, f"s/r-{i}".encode(), 0, i, v.encode()) for i, v in enumerate(values)],
    "topic string, key binary, partition int, offset long, value binary"), tables
).select("topic", "partition", "offset", "key", "fallback_key", "value")

def land(batch_id, rerun=None):
    checkpoint = settings.hdfs_url + "/questlog/no-checkpoint-" + sys.argv[1]
    lander = Lander(spark, settings, source, catalog, iceberg, index, checkpoint)
    lander.run_id = "0123abcd"  # the checkpoint's query id, as the sink reads it
    lander.rerun = rerun  # what pending_batch reads from the checkpoint: Spark runs this batch again
    lander(records, batch_id)
    lander.close()
    return spark.table(f"{settings.trino_catalog}.{sys.argv[1]}.sword_purchases").count()

print("ROWS " + json.dumps([land(7), land(7, rerun=7), land(8)]))
spark.stop()
"""


def test_a_batch_run_again_after_a_crash_is_not_committed_twice(live_settings):
    """Batch 7 lands 5 rows; the same batch run again by a new query (what Spark does after a crash
    between the commits and its checkpoint's commit: the batch is in the offsets log, not in the
    commits log) finds its commit in the table's snapshots and commits nothing; batch 8 with the
    same records finds them in the dedupe index: still 5 rows."""
    import os
    import subprocess
    import sys

    from ops.stack.java import find_java, java_home

    env = {
        **os.environ,
        **live_settings.to_env(),
        "JAVA_HOME": java_home(find_java(17, 21)),
        "SPARK_LOCAL_IP": "127.0.0.1",
    }
    schema = f"rerun_{uuid.uuid4().hex[:8]}"
    done = subprocess.run([sys.executable, "-c", RERUN, schema], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "batch 7 was committed to sword_purchases before a restart" in done.stderr
    rows = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("ROWS "))[5:])
    assert rows == [5, 5, 5]
