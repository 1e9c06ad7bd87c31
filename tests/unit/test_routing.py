"""Routing decisions: pure functions from a raw record to the record to write."""

import json
from datetime import UTC, datetime

import pytest

from faust_app.routing import Source, route

SRC = Source("events", 0, 42)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=UTC)


def raw(**fields):
    event = {
        "event_id": "e-1",
        "event_type": "join_guild",
        "received_at": "2026-11-29T10:00:00.000+00:00",
        "guild_id": "g1",
        **fields,
    }
    return json.dumps(event).encode()


def test_a_valid_event_goes_to_its_typed_topic_keyed_by_event_id(catalog):
    routed = route(raw(), SRC, catalog, "events", "events.dlq", NOW)
    assert (routed.topic, routed.key, routed.dead) == ("events.join_guild", b"e-1", False)
    assert json.loads(routed.value)["guild_id"] == "g1"


@pytest.mark.parametrize(
    "payload, reason",
    [
        (b"\xff\xfe not json", "payload is not valid JSON"),
        (b"", "payload is not valid JSON"),
        (b"[1]", "event must be a JSON object"),
        (raw(event_type="fly_dragon"), "unknown event_type 'fly_dragon'"),
        (raw(guild_id=5), "field 'guild_id': expected string, got integer 5"),
    ],
)
def test_an_invalid_event_becomes_a_dead_letter_with_reason_raw_and_source(catalog, payload, reason):
    routed = route(payload, SRC, catalog, "events", "events.dlq", NOW)
    assert routed.topic == "events.dlq" and routed.dead
    letter = json.loads(routed.value)
    assert letter["reason"].startswith(reason)
    assert letter["raw"] == payload.decode("utf-8", errors="replace")
    assert (letter["source_topic"], letter["source_partition"], letter["source_offset"]) == ("events", 0, 42)
    assert letter["failed_at"] == "2026-11-29T12:00:00.000+00:00"
    assert routed.key == b"events:0:42"


def test_a_dead_letter_keeps_the_identity_it_could_read(catalog):
    letter = json.loads(route(raw(guild_id=5), SRC, catalog, "events", "events.dlq", NOW).value)
    assert (letter["event_id"], letter["event_type"]) == ("e-1", "join_guild")
    assert letter["received_at"] == "2026-11-29T10:00:00.000+00:00"


def test_timestamps_are_rewritten_in_one_spelling_every_reader_parses(catalog):
    routed = route(
        raw(received_at="20261129T100000Z", client_ts="2026-11-29T10:00:00,5+01:00"),
        SRC,
        catalog,
        "events",
        "events.dlq",
        NOW,
    )
    event = json.loads(routed.value)
    assert event["received_at"] == "2026-11-29T10:00:00.000+00:00"
    assert event["client_ts"] == "2026-11-29T10:00:00.500+01:00"


def test_an_unpaired_surrogate_never_crashes_routing(catalog):
    routed = route(
        b'{"event_id": "e\\ud800", "event_type": "join_guild", '
        b'"received_at": "2026-11-29T10:00:00+00:00", "guild_name": "\\udc00"}',
        SRC,
        catalog,
        "events",
        "events.dlq",
        NOW,
    )
    assert routed.dead and "field 'event_id': expected 1 to 128 characters" in routed.reason  # the id rule
    routed = route(raw(guild_name="\udc00"), SRC, catalog, "events", "events.dlq", NOW)
    assert not routed.dead and b"\\udc00" in routed.value  # kept, escaped


@pytest.mark.parametrize(
    "payload, code",
    [
        (b"\xff\xfe not json", "not_json"),
        (b"[]", "bad_record"),
        (b"[1]", "not_object"),
        (raw(event_type="fly_dragon"), "unknown_type"),
        (raw(guild_id=5), "wrong_type"),
        (raw(event_type=None), "unknown_type"),
        (raw(colour="red"), "unknown_field"),
        (raw(guild_id=5, colour="red"), "wrong_type"),  # the first problem decides
    ],
)
def test_a_dead_letter_carries_its_reason_code_beside_the_text(catalog, payload, code):
    from faust_app.routing import route_record
    from questlog.deadletters import REASON_CODES

    [(_, routed)] = route_record(payload, SRC, catalog, "events", "events.dlq", NOW)
    record = json.loads(routed.value)
    assert routed.dead and routed.code == record["reason_code"] == code and code in REASON_CODES
    assert record["reason"]  # the text stays, for people


def test_a_typed_copy_over_the_limit_is_a_too_large_dead_letter(catalog):
    routed = route(raw(guild_name="x" * 2000), SRC, catalog, "events", "events.dlq", NOW, limit=1500)
    assert routed.dead and json.loads(routed.value)["reason_code"] == "too_large"
