"""Routing decisions (pure) and the Faust agent in its test context."""

import asyncio
import json
from datetime import datetime, timezone
from unittest import mock

import pytest

from faust_app.routing import Source, route

SRC = Source("events", 0, 42)
NOW = datetime(2026, 11, 29, 12, 0, tzinfo=timezone.utc)


def raw(**fields):
    event = {"event_id": "e-1", "event_type": "join_guild", "received_at": "2026-11-29T10:00:00.000+00:00",
             "guild_id": "g1", **fields}
    return json.dumps(event).encode()


def test_a_valid_event_goes_to_its_typed_topic_keyed_by_event_id(catalog):
    routed = route(raw(), SRC, catalog, "events", "events.dlq", NOW)
    assert (routed.topic, routed.key, routed.dead) == ("events.join_guild", b"e-1", False)
    assert json.loads(routed.value)["guild_id"] == "g1"


@pytest.mark.parametrize("payload, reason", [
    (b"\xff\xfe not json", "payload is not valid JSON"),
    (b"", "payload is not valid JSON"),
    (b"[1]", "event must be a JSON object"),
    (raw(event_type="fly_dragon"), "unknown event_type 'fly_dragon'"),
    (raw(guild_id=5), "field 'guild_id': expected string, got integer 5"),
])
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


def test_the_agent_sends_each_event_where_routing_says_and_waits_for_delivery():
    from faust_app.app import app

    sent = []

    async def fake_send(self, key=None, value=None, **kwargs):
        sent.append((self.get_topic_name(), key, value))
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_result("metadata")
        return delivered

    async def scenario():
        with mock.patch("faust.topics.Topic.send", fake_send), \
                mock.patch("faust.topics.Topic.maybe_declare", mock.AsyncMock()):
            async with app.route_events.test_context() as agent:
                await agent.put(raw(), key=b"k")
                await agent.put(b"garbage", key=b"k")
                return list(agent.results.values())

    results = asyncio.run(scenario())
    assert results == ["events.join_guild", "events.dlq"]
    assert [topic for topic, _, _ in sent] == ["events.join_guild", "events.dlq"]
    assert json.loads(sent[0][2])["schema_version"] == 1  # stamped by the router
    assert json.loads(sent[1][2])["reason"].startswith("payload is not valid JSON")
