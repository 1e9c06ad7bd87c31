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


def test_timestamps_are_rewritten_in_one_spelling_every_reader_parses(catalog):
    routed = route(raw(received_at="20261129T100000Z", client_ts="2026-11-29T10:00:00,5+01:00"),
                   SRC, catalog, "events", "events.dlq", NOW)
    event = json.loads(routed.value)
    assert event["received_at"] == "2026-11-29T10:00:00.000+00:00"
    assert event["client_ts"] == "2026-11-29T10:00:00.500+01:00"


def test_an_unpaired_surrogate_never_crashes_routing(catalog):
    routed = route(b'{"event_id": "e\\ud800", "event_type": "join_guild", '
                   b'"received_at": "2026-11-29T10:00:00+00:00", "guild_name": "\\udc00"}',
                   SRC, catalog, "events", "events.dlq", NOW)
    assert routed.dead and "not valid Unicode" in routed.reason
    routed = route(raw(guild_name="\udc00"), SRC, catalog, "events", "events.dlq", NOW)
    assert not routed.dead and b"\\udc00" in routed.value  # kept, escaped


def test_a_huge_dead_letter_keeps_a_cut_payload_and_says_so(catalog):
    payload = json.dumps({"event_type": "nope", "pad": "x" * 900_000}).encode()
    letter = json.loads(route(payload, SRC, catalog, "events", "events.dlq", NOW).value)
    assert len(letter["raw"]) == 400_000
    assert letter["reason"].endswith(f"(raw payload cut to its first 400000 of {len(payload)} characters)")


def test_the_agent_sends_each_event_where_routing_says_and_waits_for_delivery():
    from faust_app.app import app

    sent, futures = [], []

    async def slow_send(self, key=None, value=None, **kwargs):
        sent.append((self.get_topic_name(), key, value))
        delivered = asyncio.get_running_loop().create_future()
        asyncio.get_running_loop().call_later(0.2, delivered.set_result, "metadata")
        futures.append(delivered)
        return delivered

    async def scenario():
        with mock.patch("faust.topics.Topic.send", slow_send), \
                mock.patch("faust.topics.Topic.maybe_declare", mock.AsyncMock()):
            async with app.route_events.test_context() as agent:
                delivered_when_done = []
                for value in (raw(), b"garbage"):
                    await agent.put(value, key=b"k")
                    delivered_when_done.append(futures[-1].done())
                return list(agent.results.values()), delivered_when_done

    results, delivered_when_done = asyncio.run(scenario())
    assert results == ["events.join_guild", "events.dlq"]
    assert delivered_when_done == [True, True]  # an event is done only once Kafka confirmed its copy
    assert [topic for topic, _, _ in sent] == ["events.join_guild", "events.dlq"]
    assert json.loads(sent[0][2])["schema_version"] == 1  # stamped by the router
    assert json.loads(sent[1][2])["reason"].startswith("payload is not valid JSON")


def test_a_failed_delivery_stops_the_router_instead_of_acknowledging():
    from faust_app.app import app

    crashes = []

    async def failing_send(self, key=None, value=None, **kwargs):
        delivered = asyncio.get_running_loop().create_future()
        delivered.set_exception(RuntimeError("broker gone"))
        return delivered

    async def scenario():
        with mock.patch("faust.topics.Topic.send", failing_send), \
                mock.patch("faust.topics.Topic.maybe_declare", mock.AsyncMock()), \
                mock.patch("faust_app.app.crash", side_effect=lambda reason: crashes.append(reason)):
            async with app.route_events.test_context() as agent:
                await agent.put(raw(), key=b"k")

    asyncio.run(scenario())
    assert len(crashes) == 1 and "broker gone" in crashes[0] and "events.join_guild" in crashes[0]
