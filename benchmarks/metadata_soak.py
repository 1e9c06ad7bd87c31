"""Do a table's snapshots, metadata files and data files stay bounded under a commit every 2 s?

An hour of the sink's cadence (1,800 commits, one small append each, with the sink's table
properties, into a table of a schema of its own) is replayed as fast as Spark commits, against a
running stack; every 150 commits (the compactor's 5 minutes at 2 s a commit) the compactor's round
runs as the service runs it (`compactor.compact`: optimize today's partition once
QUESTLOG_COMPACT_MIN_FILES small files gathered, then snapshot expiry), with the grace period
scaled to the same number of commits (600 s = 300 commits; never below Trino's 1-minute floor).
Commits pause while a round runs (in the service they go on). Prints, every round and at the end,
the table's snapshots, its files under `metadata/` and under `data/`, and what the latest snapshot
references.

Run (a stack up, e.g. `make run`; QUESTLOG_* variables as for it):
    .venv/bin/python -m benchmarks.metadata_soak --commits 1800
"""

from __future__ import annotations

import argparse
import json
import time
import uuid

from compactor.compact import Compactor
from questlog.catalog import load_catalog
from questlog.settings import Settings
from questlog.sql import execute


def hdfs_count(settings: Settings, path: str) -> int:
    from hdfs import InsecureClient

    client = InsecureClient(settings.webhdfs_url, user="questlog")
    try:
        return int(client.content(path)["fileCount"])
    except Exception:
        return 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--commits", type=int, default=1800)
    parser.add_argument("--round-every", type=int, default=150, help="commits between compactor rounds")
    parser.add_argument("--grace-commits", type=int, default=300, help="the grace period, in commits")
    args = parser.parse_args()

    from spark_sink.session import catalog_session
    from spark_sink.tables import create_table_sql, qualified, table_location
    from spark_sink.transform import to_rows

    base = Settings.from_env()
    settings = base.replace(trino_schema=f"soak_{uuid.uuid4().hex[:8]}")
    catalog = load_catalog(settings.catalog)
    table = next(t for t in catalog.tables(settings.raw_topic, settings.dlq_topic) if t.name == "sword_purchases")
    spark = catalog_session(settings, "local[1]")
    spark.sparkContext.setLogLevel("ERROR")
    spark.sql(f"CREATE NAMESPACE IF NOT EXISTS {settings.trino_catalog}.{settings.trino_schema}")
    spark.sql(create_table_sql(settings, table))
    name = qualified(settings, table.name)
    location = table_location(settings, table.name).split(settings.hdfs_url.rstrip("/"), 1)[1]
    compactor = Compactor(settings)
    now = time.strftime("%Y-%m-%dT%H:%M:%S.000+00:00", time.gmtime())
    started = time.monotonic()
    per_commit: list[float] = []

    def report(done: int) -> dict:
        snapshots = execute(settings, f'SELECT count(*) FROM "{table.name}$snapshots"')[1][0][0]
        live = execute(settings, f'SELECT count(*) FROM "{table.name}$files"')[1][0][0]
        manifests = execute(settings, f'SELECT count(*) FROM "{table.name}$manifests"')[1][0][0]
        out = {
            "commits": done,
            "snapshots": snapshots,
            "metadata_files": hdfs_count(settings, f"{location}/metadata"),
            "data_files_on_hdfs": hdfs_count(settings, f"{location}/data"),
            "data_files_in_latest_snapshot": live,
            "manifests_in_latest_snapshot": manifests,
            "elapsed_s": round(time.monotonic() - started, 1),
        }
        print(json.dumps(out), flush=True)
        return out

    for i in range(1, args.commits + 1):
        t0 = time.monotonic()
        event = {"event_id": f"soak-{i}", "event_type": "purchase_sword", "received_at": now, "price": 1.0}
        batch = spark.createDataFrame([(table.topic, json.dumps(event).encode())], "topic string, value binary")
        to_rows(batch, table).coalesce(1).writeTo(name).option("snapshot-property.questlog.checkpoint", "50a6").option(
            "snapshot-property.questlog.batch", str(i)
        ).append()
        per_commit.append(time.monotonic() - t0)
        if i % args.round_every == 0:
            recent = per_commit[-args.round_every :]
            grace = args.grace_commits * sum(recent) / len(recent)
            compactor.run([table.name], [now[:10]], min_files=settings.compact_min_files, expire=False)
            compactor.expire(table.name, grace_s=grace)
            report(i)
    final = report(args.commits)
    rows = execute(settings, f'SELECT count(*) FROM "{table.name}"')[1][0][0]
    print(json.dumps({"rows": rows, "expected": args.commits, "final": final}), flush=True)
    spark.stop()  # the table stays, in its own schema, for a look


if __name__ == "__main__":
    main()
