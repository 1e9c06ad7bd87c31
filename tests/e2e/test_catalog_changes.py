"""Issue 3 end to end, on the running pipeline: catalog changes without a restart, exactly-once
rows, dead letters and replay."""

import json
import re
import uuid
from datetime import UTC, datetime

import pytest
import requests
from click.testing import CliRunner

from ops.cli import main
from questlog.kafka_admin import deploy_with_topics
from tests.helpers import count_when, produce, query, settle, wait_for

pytestmark = pytest.mark.e2e


def post(settings, body, host="e2e.example"):
    return requests.post(f"{settings.collector_url}/events", json=body, headers={"Host": host}, timeout=10)


def cli(settings, *args):
    result = CliRunner().invoke(main, list(args), env=settings.to_env())
    assert result.exit_code == 0, result.output
    return result.output


def test_duplicates_sent_on_purpose_show_up_once(live_settings):
    event_id = f"dup-{uuid.uuid4()}"
    event = {"event_type": "level_up", "event_id": event_id, "level": 7}
    for _ in range(3):  # a client retrying
        assert post(live_settings, event).status_code == 202
    # 180 s: when this test is the first on a fresh stack, its row waits for the sink's first batch,
    # which a cold JVM on a busy machine has taken over 90 s to land
    sql = f"SELECT count(*) FROM level_ups WHERE event_id = '{event_id}'"
    assert count_when(live_settings, sql, 1, timeout_s=180) == 1
    # ... and a router re-delivering it later, after it already landed: as the router wrote it, with
    # the source the collector gave it (write keys are off: `default`), the identity the sink keys on
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    again = json.dumps({**event, "source": "default", "received_at": now}).encode()
    produce(live_settings, live_settings.topic_for("level_up"), [again, again])
    settle(live_settings)
    assert query(live_settings, f"SELECT count(*) FROM level_ups WHERE event_id = '{event_id}'") == [[1]]


def test_a_type_added_by_one_catalog_entry_becomes_a_table_while_running(live_settings, live_schemas):
    (live_schemas / "open_chest.toml").write_text(
        'event_type = "open_chest"\nversion = 1\ntable = "chest_openings"\n'
        'description = "A player opened a chest."\n[http]\nroutes = ["/open_chest"]\nresponse = "Opened!\\n"\n'
        '[fields.chest]\ntype = "string"\n[fields.gold]\ntype = "long"\n'
    )
    _, changes = deploy_with_topics(live_settings, live_schemas)
    assert changes == ["new type open_chest (table chest_openings)"]

    host = f"player9.{uuid.uuid4().hex[:8]}.example"
    response = wait_for(
        lambda: (
            (
                r := requests.get(
                    f"{live_settings.collector_url}/open_chest",
                    params={"chest": "golden", "gold": "40"},
                    headers={"Host": host},
                    timeout=10,
                )
            ).ok
            and r
        ),
        timeout_s=30,
        what="the collector to accept the new type",
    )
    assert response.text == "Opened!\n"
    assert post(live_settings, {"event_type": "open_chest", "chest": "wooden", "gold": 2}, host).status_code == 202

    rows = wait_for(
        lambda: _try(
            live_settings,
            f"SELECT user_id, chest, gold, schema_version FROM chest_openings WHERE host = '{host}' ORDER BY gold",
        ),
        timeout_s=120,
        what="rows in the new table",
    )
    assert rows == [["player9", "wooden", 2, 1], ["player9", "golden", 40, 1]]
    # its topic, made by the deploy as the admin (the router and the sink may not create topics),
    # has the pipeline's durability and retention configs like the topics made at start
    from confluent_kafka.admin import ConfigResource, ResourceType

    from questlog.kafka_admin import admin_client

    resource = ConfigResource(ResourceType.TOPIC, live_settings.topic_for("open_chest"))
    admin = admin_client(live_settings.kafka_client())  # held until it answered
    configs = admin.describe_configs([resource])[resource].result()
    assert configs["min.insync.replicas"].value == "1"
    assert configs["unclean.leader.election.enable"].value == "false"
    assert configs["retention.bytes"].value == str(live_settings.topic_retention_bytes)


def test_a_rejected_event_is_replayed_exactly_once_after_the_catalog_is_fixed(live_settings, live_schemas, monkeypatch):
    # replay streams the dead letters a chunk at a time: chunks of 2 here, so that every replay
    # below reads the session's dead letters in many chunks, each looked up beside the read
    monkeypatch.setattr("ops.replay.CHUNK", 2)
    host = f"replay.{uuid.uuid4().hex[:8]}"
    bad_id = f"bad-{uuid.uuid4()}"
    old = {"event_type": "purchase_sword", "event_id": f"old-{uuid.uuid4()}", "price": 1.0}
    assert (
        post(
            live_settings,
            [old, {"event_type": "purchase_sword", "event_id": bad_id, "price": 5.0, "enchantment": "fire"}],
            host,
        ).status_code
        == 202
    )
    letters = wait_for(
        lambda: query(
            live_settings,
            f"SELECT reason, source_topic, source_partition, "
            f"source_offset >= 0, received_at IS NOT NULL, reason_code FROM dead_letters "
            f"WHERE event_id = '{bad_id}'",
        ),
        what="the dead letter",
    )
    assert letters[0][0].startswith("field 'enchantment': not in the 'purchase_sword' schema")
    assert letters[0][1:] == [live_settings.raw_topic, 0, True, True, "unknown_field"]

    before_fix = cli(live_settings, "replay", "--type", "purchase_sword")
    assert "re-sent: 0" in before_fix
    assert int(re.search(r"still rejected by the catalog: (\d+)", before_fix).group(1)) >= 1

    # The fix: a new optional field, deployed while everything runs.
    path = live_schemas / "purchase_sword.toml"
    path.write_text(
        path.read_text().replace("version = 1", "version = 2")
        + '\n[fields.enchantment]\ntype = "string"\ndescription = "Magic on the blade."\n'
    )
    _, changes = deploy_with_topics(live_settings, live_schemas)
    assert changes == ["purchase_sword v1 -> v2: new fields enchantment"]

    new = {"event_type": "purchase_sword", "event_id": f"new-{uuid.uuid4()}", "enchantment": "ice"}
    wait_for(
        lambda: (
            post(live_settings, new, host).status_code == 202
            and _try(live_settings, f"SELECT enchantment FROM sword_purchases WHERE event_id = '{new['event_id']}'")
        ),
        timeout_s=120,
        what="the new column with a v2 row",
    )
    assert query(
        live_settings, f"SELECT enchantment, schema_version FROM sword_purchases WHERE event_id = '{old['event_id']}'"
    ) == [[None, 1]]  # old rows: NULL

    # replay filters on the reason code: none of another code is this one
    other_code = cli(live_settings, "replay", "--code", "not_json", "--code", "wrong_type", "--dry-run")
    assert "would re-send: 0" in other_code
    assert "re-sent: 1" in cli(live_settings, "replay", "--code", "unknown_field")
    sql = f"SELECT enchantment, price, schema_version FROM sword_purchases WHERE event_id = '{bad_id}'"
    assert wait_for(lambda: query(live_settings, sql), what="the replayed row") == [["fire", 5.0, 2]]

    second = cli(live_settings, "replay")
    assert "re-sent: 0" in second and "already in their tables: 1" in second
    settle(live_settings)
    assert query(live_settings, f"SELECT count(*) FROM sword_purchases WHERE event_id = '{bad_id}'") == [[1]]


def test_an_incompatible_change_is_refused_before_anything_is_deployed(live_settings, live_schemas):
    path = live_schemas / "level_up.toml"
    original = path.read_text()
    path.write_text(original.replace('[fields.level]\ntype = "long"', '[fields.level]\ntype = "double"'))
    try:
        result = CliRunner().invoke(
            main, ["catalog", "deploy", "--schemas", str(live_schemas)], env=live_settings.to_env()
        )
    finally:
        path.write_text(original)
    assert result.exit_code == 1
    assert "incompatible catalog change, nothing deployed" in result.output
    assert "level_up: field 'level' changed type from long to double" in result.output
    assert query(
        live_settings,
        "SELECT data_type FROM information_schema.columns "  # this pipeline's schema:
        f"WHERE table_schema = '{live_settings.trino_schema}' "  # the bench's has one too
        "AND table_name = 'level_ups' AND column_name = 'level'",
    ) == [["bigint"]]


def _try(settings, sql):
    """Rows of ``sql``, or None while the table or column does not exist yet."""
    try:
        return query(settings, sql)
    except Exception:
        return None
