"""Write keys on: a second collector (as `questlog run` starts it, with QUESTLOG_WRITE_KEYS set)
feeds the session's pipeline; sources land as a column, and two sources' equal event_ids are two
rows."""

from __future__ import annotations

import uuid

import pytest
import requests

from ops.stack import services
from ops.stack.process import Supervisor
from tests.helpers import count_when, query, read_topic

pytestmark = pytest.mark.e2e

KEY_A, KEY_B = f"test-key-a-{uuid.uuid4().hex}", f"test-key-b-{uuid.uuid4().hex}"


@pytest.fixture(scope="module")
def keyed(live_settings):
    home = live_settings.home_path / "keyed-collector"
    home.mkdir(parents=True, exist_ok=True)
    keys = home / "write-keys.toml"
    keys.write_text(f'# write key = source\n"{KEY_A}" = "game-a"\n"{KEY_B}" = "game-b"\n')
    settings = live_settings.replace(
        home=str(home),
        write_keys=str(keys),
        collector_bind=f"{live_settings.collector_host}:{live_settings.collector_port + 301}",
        kafka_password_file=str(live_settings.kafka_password_path),  # the stack's Kafka users
    )
    supervisor = Supervisor(home)
    collector = services.collector(settings)
    try:
        supervisor.start(collector)
        supervisor.wait_healthy(collector)
        yield settings
    finally:
        supervisor.stop("collector")


def test_keys_on_a_request_without_a_valid_key_gets_401_and_nothing_is_sent(keyed, live_settings):
    run = uuid.uuid4().hex
    url = keyed.collector_url
    for headers, query_string in (
        ({}, ""),
        ({"Authorization": "Bearer not-a-key-at-all"}, ""),
        ({}, "?key=wrong-key-1"),
    ):
        post = requests.post(
            f"{url}/events{query_string}",
            json={"event_type": "default", "event_id": f"{run}-no"},
            headers=headers,
            timeout=10,
        )
        get = requests.get(
            f"{url}/purchase_a_sword{query_string}", params={"event_id": f"{run}-no"}, headers=headers, timeout=10
        )
        assert (post.status_code, get.status_code) == (401, 401), (post.text, get.text)
        assert post.headers["WWW-Authenticate"].startswith("Bearer")
    ok = requests.post(
        f"{url}/events",
        json={"event_type": "default", "event_id": f"{run}-yes"},
        headers={"Authorization": f"Bearer {KEY_A}"},
        timeout=10,
    )
    assert ok.status_code == 202, ok.text
    # The raw topic holds the accepted event and none of the refused ones before it.
    [record] = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("event_id", "").startswith(run), 1)
    assert (record["event_id"], record["source"], record["_key"]) == (
        f"{run}-yes",
        "game-a",
        f"game-a/{run}-yes".encode(),
    )


def test_two_sources_sending_the_same_event_id_both_land_with_their_source(keyed, live_settings):
    event_id = f"shared-{uuid.uuid4().hex[:12]}"
    for key in (KEY_A, KEY_B, KEY_A):  # game-a's retry is a repeat, game-b's is an event of its own
        response = requests.post(
            f"{keyed.collector_url}/events",
            timeout=10,
            headers={"Authorization": f"Bearer {key}"},
            json={"event_type": "level_up", "event_id": event_id, "level": 7},
        )
        assert response.status_code == 202, response.text
    seed_style = requests.get(
        f"{keyed.collector_url}/level_up", params={"key": KEY_B, "level": "7", "event_id": event_id}, timeout=10
    )
    assert seed_style.status_code == 200, seed_style.text  # ?key= on a GET route; game-b's repeat

    sql = f"SELECT count(*) FROM level_ups WHERE event_id = '{event_id}'"
    assert count_when(live_settings, sql, 2, timeout_s=300) == 2  # a busy machine: minutes, not seconds
    rows = query(live_settings, f"SELECT source, level FROM level_ups WHERE event_id = '{event_id}' ORDER BY source")
    assert rows == [["game-a", 7], ["game-b", 7]]


def test_keys_off_the_source_column_says_default(live_settings):
    event_id = f"dflt-{uuid.uuid4().hex[:12]}"
    assert (
        requests.post(
            f"{live_settings.collector_url}/events",
            timeout=10,
            json={"event_type": "leave_guild", "event_id": event_id, "guild_id": "g"},
        ).status_code
        == 202
    )
    assert (
        count_when(live_settings, f"SELECT count(*) FROM guild_leaves WHERE event_id = '{event_id}'", 1, timeout_s=300)
        == 1
    )
    assert query(live_settings, f"SELECT source FROM guild_leaves WHERE event_id = '{event_id}'") == [["default"]]


def test_a_tracker_with_a_wrong_key_keeps_its_batch_in_the_spool_until_the_key_is_valid(keyed, live_settings, tmp_path):
    from questlog_client import Tracker

    run = uuid.uuid4().hex
    late_key = f"test-key-late-{run}"
    spool = tmp_path / "spool"
    tracker = Tracker(
        keyed.collector_url, write_key=late_key, spool_dir=spool, flush_interval_s=0.05, backoff_max_s=1.0, catalog=None
    )
    ids = [tracker.track("level_up", event_id=f"{run}-{i}", level=i) for i in range(20)]
    assert not tracker.flush(3)  # 401 for now: kept, not refused, not dropped
    assert tracker.stats.unauthorized == 20 and tracker.stats.refused == 0 and tracker.stats.accepted == 0
    assert tracker.stats.errors["401"] >= 1
    assert list(spool.glob("spool-*.log"))
    # The operator adds the key; the collector re-reads its key file within seconds.
    keys = keyed.home_path / "write-keys.toml"
    keys.write_text(keys.read_text() + f'"{late_key}" = "game-late"\n')
    assert tracker.flush(60)
    assert tracker.stats.accepted == 20
    tracker.close()
    landed = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("event_id", "").startswith(run), 20)
    assert sorted(r["event_id"] for r in landed) == sorted(ids)
    assert {r["source"] for r in landed} == {"game-late"}


def test_a_tracker_splits_a_batch_the_collector_finds_too_large_and_every_event_lands(live_settings):
    from questlog_client import Tracker

    run = uuid.uuid4().hex
    # Batches of up to 1,000 events of 2 KB: 2 MB, over the collector's 900,000-byte body limit
    tracker = Tracker(
        live_settings.collector_url, batch_size=1000, max_batch_bytes=8 * 2**20, flush_interval_s=1.0, catalog=None
    )
    ids = [tracker.track("default", event_id=f"{run}-{i}", note="n" * 2000) for i in range(1000)]
    assert tracker.flush(120)
    assert tracker.stats.accepted == 1000 and tracker.stats.refused == 0
    assert tracker.stats.splits >= 1 and tracker.stats.errors["413"] >= 1
    tracker.close()
    landed = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("event_id", "").startswith(run), 1000)
    assert sorted(r["event_id"] for r in landed) == sorted(ids)
