"""Players' data on the real stack (docs/privacy.md): a forgotten player's rows leave every table
and their files leave HDFS, their events sent again every way the pipeline takes them never land,
other players' rows stay exactly as they were, a `kill -9` in the middle of an erasure leaves
nothing half-done once it is run again; retention drops exactly the days past each table's limit;
personal fields land hashed or cut; Kafka topics get the settings' time and size bounds."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import requests

from compactor.compact import Compactor, retention_cutoff, retention_days
from questlog.catalog import load_catalog
from questlog.checkpoint import sink_progress
from questlog.privacy import Hasher, RequestStore, load_secret
from questlog.settings import Settings
from questlog_client import Tracker
from tests.helpers import produce, query, settle, wait_for

pytestmark = pytest.mark.e2e

GRACE_S = 60.0  # Trino's floor for expire_snapshots (compose/trino/catalog/iceberg.properties)
TABLES = ("guild_joins", "sword_purchases", "level_ups", "default_hits", "dead_letters", "sessions")


def cli(settings: Settings, *args: str, timeout: float = 600) -> subprocess.CompletedProcess:
    env = {**os.environ, **settings.to_env(), "QUESTLOG_FORGET_GRACE_S": str(GRACE_S)}
    return subprocess.run(
        [sys.executable, "-m", "ops.cli", *args], env=env, capture_output=True, text=True, timeout=timeout, check=False
    )


def where_player(table: str, user: str) -> str:
    if table == "dead_letters":
        return f'strpos(raw, \'"user_id":"{user}"\') > 0'
    return f"user_id = '{user}'"


def rows_of(settings: Settings, user: str) -> dict[str, int]:
    return {t: query(settings, f"SELECT count(*) FROM {t} WHERE {where_player(t, user)}")[0][0] for t in TABLES}


def files_of(settings: Settings, user: str) -> set[str]:
    return {
        r[0] for t in TABLES for r in query(settings, f'SELECT DISTINCT "$path" FROM {t} WHERE {where_player(t, user)}')
    }


def on_hdfs(settings: Settings, url: str) -> bool:
    path = "/" + url.split("://", 1)[1].split("/", 1)[1]
    response = requests.get(
        f"{settings.webhdfs_url}/webhdfs/v1{path}", params={"op": "GETFILESTATUS", "user.name": "questlog"}, timeout=10
    )
    assert response.status_code in (200, 404), response.text
    return response.status_code == 200


def events_of(user: str, tag: str) -> list[dict]:
    """Events of every kind for ``user``: three typed ones and one that becomes a dead letter."""
    return [
        {"event_type": "join_guild", "event_id": f"{tag}-j", "user_id": user, "guild_id": "g", "invited_by": "x"},
        {"event_type": "purchase_sword", "event_id": f"{tag}-p", "user_id": user, "sword_type": "katana", "price": 3.0},
        {"event_type": "level_up", "event_id": f"{tag}-l", "user_id": user, "level": 2},
        {"event_type": "join_guild", "event_id": f"{tag}-d", "user_id": user, "guild_id": 5},  # wrong type
    ]


def post(settings: Settings, events: list[dict]) -> None:
    response = requests.post(f"{settings.collector_url}/events", json=events, timeout=30)
    assert response.status_code == 202, response.text


def enveloped(event: dict, received: str) -> bytes:
    """A raw record as the collector writes it (what `questlog replay` produces, too)."""
    return json.dumps({"source": "default", "received_at": received, **event}).encode()


def last_values(settings: Settings, topic: str, key: bytes) -> list[bytes | None]:
    """Every value ``key`` has had in ``topic`` (a compacted changelog), oldest first, up to the
    ends of its partitions as they are now; None for a tombstone."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({**settings.kafka_client(), "group.id": f"test-{uuid.uuid4()}"})
    try:
        partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
        ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10) for p in partitions}
        consumer.assign([TopicPartition(topic, p, low) for p, (low, high) in ends.items() if high > low])
        left = {p for p, (low, high) in ends.items() if high > low}
        values: list[bytes | None] = []
        deadline = time.monotonic() + 60
        while left and time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            if msg.key() == key:
                values.append(msg.value())
            if msg.offset() >= ends[msg.partition()][1] - 1:
                left.discard(msg.partition())
        assert not left, f"{topic}: partitions {left} not read to their ends"
        return values
    finally:
        consumer.close()


def test_a_forgotten_player_leaves_every_table_and_hdfs_and_never_lands_again(live_settings, tmp_path):
    s = live_settings
    run = uuid.uuid4().hex[:8]
    gone, kept = f"gone-{run}", f"kept-{run}"
    for user in (gone, kept):
        post(s, events_of(user, f"{run}-{user}-1"))
        post(s, [{"event_type": "default", "event_id": f"{run}-{user}-h{i}", "user_id": user} for i in range(5)])
    wait_for(lambda: rows_of(s, gone)["dead_letters"] == 1 and rows_of(s, kept)["default_hits"] == 5, 180)
    settle(s)
    before_kept = rows_of(s, kept)
    before_gone = rows_of(s, gone)
    assert before_gone == {**before_kept, "sessions": before_gone["sessions"]}, before_gone
    files = files_of(s, gone)
    assert files

    # Events of theirs already in Kafka when the request comes: whatever the router had not routed yet
    # is dropped, what it had routed lands and is erased with the rest.
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    produce(s, s.raw_topic, [enveloped(e, now) for e in events_of(gone, f"{run}-inflight")])
    done = cli(s, "forget", "--user", gone, "--now", "--wait")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "done: 1 requests" in done.stdout

    assert rows_of(s, gone) == dict.fromkeys(TABLES, 0)
    assert rows_of(s, kept) == before_kept  # exact: nobody else's rows went
    assert [f for f in files if on_hdfs(s, f)] == []  # the bytes, not only the rows
    # The router's sessions table: their entry deleted (a tombstone last in its compacted changelog,
    # so compaction drops it), the other player's kept.
    changelog = s.sessions_changelog_topic
    wait_for(
        lambda: last_values(s, changelog, f"default/{gone}".encode())[-1:] == [None],
        120,
        5,
        what="a tombstone for the forgotten player in the sessions changelog",
    )
    assert last_values(s, changelog, f"default/{kept}".encode())[-1] is not None

    # Sent again, every way in: HTTP (the same ids and new ones), the client from its spool after
    # a failed send, a replay-like produce to the raw topic, a client's load.
    post(s, events_of(gone, f"{run}-{gone}-1") + events_of(gone, f"{run}-again"))
    spool = tmp_path / "spool"
    offline = Tracker("http://127.0.0.1:1", spool_dir=spool, catalog=None, backoff_max_s=0.1)
    for event in events_of(gone, f"{run}-spool"):
        offline.track_event(event, check=False)
    offline.close(timeout_s=1)
    online = Tracker(s.collector_url, spool_dir=spool, catalog=None)
    assert online.flush(60) and online.close(30)
    produce(s, s.raw_topic, [enveloped(e, now) for e in events_of(gone, f"{run}-replayed")])
    with Tracker(s.collector_url, catalog=None) as client:
        for i in range(20):
            client.track("default", user_id=gone, event_id=f"{run}-load-{i}")
        client.track("default", user_id=kept, event_id=f"{run}-kept-after")
    wait_for(lambda: rows_of(s, kept)["default_hits"] == before_kept["default_hits"] + 1, 120)
    settle(s)
    assert rows_of(s, gone) == dict.fromkeys(TABLES, 0)
    metrics = requests.get(s.router_metrics_url, timeout=10).text
    suppressed = next(line for line in metrics.splitlines() if line.startswith("questlog_router_suppressed_total "))
    assert float(suppressed.split()[1]) >= 4 * 4 + 20

    # The request file and the audit log keep no personal data.
    store = RequestStore(s)
    for path in [*store.dir.glob("*.json"), store.audit_path]:
        assert gone not in path.read_text(), path
    assert any(r.state == "done" for r in store.all())

    # Lifting is explicit, and then their new events land again.
    lifted = cli(s, "forget", "--user", gone, "--lift")
    assert lifted.returncode == 0 and "lifted" in lifted.stdout, lifted.stdout + lifted.stderr
    post(s, [{"event_type": "default", "event_id": f"{run}-back", "user_id": gone}])
    wait_for(lambda: rows_of(s, gone)["default_hits"] == 1, 120, what="the lifted player's new event")


@pytest.fixture
def compactor_stopped(pipeline):
    """The pipeline's compactor service stopped for the test (it would take a pending request up
    itself), and started again after."""
    from ops.stack import services

    pipeline.supervisor.stop("compactor")
    try:
        yield
    finally:
        if pipeline.supervisor.running_pid("compactor") is None:
            pipeline.supervisor.start(services.compactor(pipeline.settings))


def test_kill_9_during_forget_leaves_nothing_half_done_after_a_retry(live_settings, compactor_stopped):
    s = live_settings
    run = uuid.uuid4().hex[:8]
    gone, kept = f"killed-{run}", f"stays-{run}"
    for user in (gone, kept):
        post(s, events_of(user, f"{run}-{user}"))
    wait_for(lambda: rows_of(s, gone)["dead_letters"] == 1 and rows_of(s, kept)["dead_letters"] == 1, 180)
    settle(s)
    before_kept = rows_of(s, kept)
    env = {**os.environ, **s.to_env()}
    proc = subprocess.Popen(
        [sys.executable, "-m", "ops.cli", "forget", "--user", gone, "--now"],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    # killed as soon as one of its DELETEs finished: that table erased, others maybe not, the files
    # that held the rows not rewritten yet (the rewrites come after the deletes)
    from questlog.sql import execute

    def deleted() -> bool:
        sql = (
            "SELECT count(*) FROM system.runtime.queries WHERE state = 'FINISHED' "
            f"AND query LIKE 'DELETE FROM%' AND strpos(query, '{gone}') > 0"
        )
        return proc.poll() is not None or execute(s, sql, user=s.compact_trino_user)[1][0][0] > 0

    wait_for(deleted, 300, 0.05, what="a DELETE of the player's rows")
    os.killpg(proc.pid, signal.SIGKILL)
    proc.wait()
    store = RequestStore(s)
    request = store.get(Hasher(load_secret(s)).request_id(gone, None))
    assert request is not None and request.state == "pending"  # nothing recorded as done that was not
    again = cli(s, "forget", "--user", gone, "--now")
    assert again.returncode == 0, again.stdout + again.stderr
    assert rows_of(s, gone) == dict.fromkeys(TABLES, 0)
    assert rows_of(s, kept) == before_kept
    for table in TABLES:  # every file that had rows deleted was rewritten: no delete files left
        assert query(s, f'SELECT count(*) FROM "{table}$files" WHERE content <> 0')[0][0] == 0, table
    assert store.get(request.id).state == "erased"


def test_retention_drops_exactly_the_days_past_each_tables_limit(live_settings):
    s = live_settings
    limits = retention_days(s, load_catalog(s.catalog))
    today = datetime.now(UTC).date()
    run = uuid.uuid4().hex[:8]
    cases = {"guild_leaves": ("leave_guild", limits["guild_leaves"]), "dead_letters": (None, limits["dead_letters"])}
    days = {table: [limit - 1, limit, limit + 1, limit + 40] for table, (_, limit) in cases.items()}
    for table, (event_type, _) in cases.items():
        records = []
        for back in days[table]:
            stamp = (datetime(today.year, today.month, today.day, 12, tzinfo=UTC) - timedelta(days=back)).isoformat(
                timespec="milliseconds"
            )
            for i in range(3):
                if event_type:
                    record = {
                        "event_id": f"{run}-{back}-{i}",
                        "source": "default",
                        "event_type": event_type,
                        "received_at": stamp,
                        "guild_id": run,
                    }
                    records.append(json.dumps(record).encode())
                else:
                    record = {
                        "reason": "test",
                        "reason_code": "other",
                        "raw": run,
                        "source_topic": f"retention-{run}",
                        "source_partition": back,
                        "source_offset": i,
                        "failed_at": stamp,
                    }
                    records.append(json.dumps(record).encode())
        topic = s.topic_for(event_type) if event_type else s.dlq_topic
        produce(s, topic, records)
    col = {"guild_leaves": "guild_id", "dead_letters": "raw"}

    def by_day(table: str) -> dict[str, int]:
        return dict(query(s, f"SELECT dt, count(*) FROM {table} WHERE {col[table]} = '{run}' GROUP BY dt"))

    for table in cases:
        wait_for(lambda t=table: sum(by_day(t).values()) == 12, 180, what=f"{table}'s old days")
    files = {
        table: {
            r[0]
            for r in query(
                s,
                f"SELECT DISTINCT \"$path\" FROM {table} WHERE {col[table]} = '{run}' AND dt < '{retention_cutoff(today.isoformat(), limit)}'",
            )
        }
        for table, (_, limit) in cases.items()
    }
    compactor = Compactor(s)
    for table, (_, limit) in cases.items():
        compactor.retention(table, limit, today.isoformat())
        kept_days = {(today - timedelta(days=back)).isoformat(): 3 for back in days[table] if back <= limit}
        assert by_day(table) == kept_days, table  # exactly the days within the limit, every row of them
    time.sleep(GRACE_S + 2)
    settle(s)
    for table in cases:
        compactor.expire(table, GRACE_S, sink_committed_batch=sink_progress(s)[0])
        compactor.remove_orphans(table, GRACE_S)
        assert files[table] and [f for f in files[table] if on_hdfs(s, f)] == [], table


def test_personal_fields_land_hashed_or_cut_and_kafka_has_time_and_size_bounds(live_settings):
    from confluent_kafka.admin import ConfigResource, ResourceType

    from questlog.kafka_admin import admin_client

    s = live_settings
    run = uuid.uuid4().hex[:8]
    post(s, [{"event_type": "join_guild", "event_id": f"{run}-pii", "invited_by": "carol", "client_ip": "203.0.113.9"}])
    rows = wait_for(
        lambda: query(s, f"SELECT invited_by, client_ip FROM guild_joins WHERE event_id = '{run}-pii'"), 120
    )
    assert rows == [[Hasher(load_secret(s)).value("carol"), "203.0.113.0"]]
    secret = Path(s.home) / "privacy" / "secret"
    assert oct(secret.stat().st_mode & 0o777) == "0o600"
    key_hex = secret.read_text().strip()
    for log in (Path(s.home) / "logs").glob("*.log"):
        assert key_hex not in log.read_text(errors="replace"), log
    admin = admin_client(s.kafka_client())
    for topic in (s.raw_topic, s.dlq_topic, s.topic_for("join_guild")):
        resource = ConfigResource(ResourceType.TOPIC, topic)
        config = admin.describe_configs([resource])[resource].result()
        assert config["retention.ms"].value == str(int(s.kafka_retention_h * 3_600_000)), topic
        assert config["retention.bytes"].value == str(s.topic_retention_bytes), topic
