"""The Faust router against the real broker: typed and dead-letter outputs."""

import json
import uuid

import pytest

from tests.helpers import produce, read_topic

pytestmark = pytest.mark.integration


def test_valid_events_reach_their_typed_topic_and_bad_ones_the_dead_letter_topic(live_settings):
    run = str(uuid.uuid4())
    good = {"event_id": f"{run}-good", "event_type": "join_guild", "received_at": "2026-11-29T10:00:00.000+00:00",
            "guild_id": "g1", "role": "member"}
    wrong_type = {**good, "event_id": f"{run}-bad", "role": 3}
    not_json = f"{run} this is not json".encode()
    produce(live_settings, live_settings.raw_topic, [json.dumps(good).encode(), json.dumps(wrong_type).encode(),
                                                     not_json])

    [typed] = read_topic(live_settings, live_settings.topic_for("join_guild"),
                         lambda r: r.get("event_id", "").startswith(run), 1)
    assert typed["event_id"] == good["event_id"] and typed["role"] == "member"

    letters = read_topic(live_settings, live_settings.dlq_topic, lambda r: run in r.get("raw", ""), 2)
    by_raw = {letter["raw"]: letter for letter in letters}
    bad = by_raw[json.dumps(wrong_type)]
    assert bad["reason"] == "field 'role': expected string, got integer 3"
    assert (bad["event_id"], bad["event_type"]) == (wrong_type["event_id"], "join_guild")
    assert bad["source_topic"] == live_settings.raw_topic
    garbage = by_raw[not_json.decode()]
    assert garbage["reason"].startswith("payload is not valid JSON")
    assert garbage["source_offset"] == bad["source_offset"] + 1  # where each came from, exactly
