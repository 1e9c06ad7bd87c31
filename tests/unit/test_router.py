"""The router's size fitting (pure), its delivery loop against a scripted Kafka (what is written,
what is retried, what becomes a dead letter), and its Faust agent in ``test_context``: a raw record
is acked only after every copy made from it is confirmed."""

import asyncio
import hashlib
import json
import random

import faust
import pytest
from aiokafka import errors as kafka_errors
from faust.exceptions import ProducerSendError

from faust_app.agents import add_route_agent
from faust_app.router import Router, backoff_s, is_permanent
from faust_app.routing import MAX_RECORD_BYTES, Source, route, route_record
from faust_app.topics import Topics
from questlog.settings import Settings

SRC = Source("events", 0, 42)
EVENT = {"event_id": "e-1", "event_type": "join_guild", "received_at": "2026-11-29T10:00:00.000+00:00"}


def fits(routed, limit=MAX_RECORD_BYTES):
    return len(routed.key or b"") + len(routed.value) <= limit


def test_sixty_thousand_unknown_fields_make_one_short_reason_and_a_dead_letter_that_fits(catalog):
    raw = json.dumps({**EVENT, **{f"field_{i}": i for i in range(60_000)}}).encode()  # 1.3 MB
    routed = route(raw, SRC, catalog, "events", "events.dlq")
    letter = json.loads(routed.value)
    assert routed.dead and fits(routed)
    assert letter["reason"].startswith("60000 fields not in the 'join_guild' schema: 'field_0', 'field_1'")
    assert "and 59990 more" in letter["reason"] and len(letter["reason"]) < 2_000
    assert raw.decode().startswith(letter["raw"]) and len(letter["raw"]) > 900_000
    assert f"raw payload cut to its first {len(letter['raw'])} of {len(raw)} characters" in letter["reason"]


def test_a_huge_non_ascii_field_name_is_cut_in_the_reason(catalog):
    raw = json.dumps({**EVENT, "й" * 140_000: 1}).encode()  # 840 KB escaped
    routed = route(raw, SRC, catalog, "events", "events.dlq")
    letter = json.loads(routed.value)
    assert routed.dead and fits(routed)
    assert "(140000 characters): not in the 'join_guild' schema" in letter["reason"]
    assert len(letter["reason"]) < 1_000


def test_a_dead_letter_too_large_keeps_a_cut_payload_its_size_and_sha256(catalog):
    raw = b"\x01" * 400_000  # 400 KB that JSON escapes to 2.4 MB (6 bytes a control character)
    routed = route(raw, SRC, catalog, "events", "events.dlq")
    letter = json.loads(routed.value)
    assert routed.dead and fits(routed) and len(routed.value) > MAX_RECORD_BYTES - 100  # filled, not emptied
    assert raw.decode().startswith(letter["raw"]) and 0 < len(letter["raw"]) < len(raw)
    assert f"raw payload cut to its first {len(letter['raw'])} of {len(raw)} characters" in letter["reason"]
    assert f"the raw payload was {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}" in letter["reason"]
    assert letter["reason"].startswith("payload is not valid JSON")


def test_a_valid_event_whose_typed_copy_is_over_the_limit_is_a_dead_letter_saying_why(catalog):
    event = {**EVENT, "received_at": "2026-11-29T10:00:00Z", "client_ts": "2026-11-29T10:00:00Z"}
    pad = MAX_RECORD_BYTES - len(json.dumps({**event, "guild_name": ""}, separators=(",", ":"))) - len("e-1") - 5
    raw = json.dumps({**event, "guild_name": "x" * pad}, separators=(",", ":")).encode()
    assert len(raw) + len(b"e-1") <= MAX_RECORD_BYTES  # it came in under the limit...
    routed = route(raw, SRC, catalog, "events", "events.dlq")
    assert routed.dead and fits(routed)  # ...but the rewrite (timestamps, schema_version) pushes it over
    assert json.loads(routed.value)["reason"].startswith("the typed copy is ")
    assert "over the 1000000-byte limit of one Kafka record" in routed.reason


@pytest.mark.parametrize("seed", range(40))
def test_whatever_the_payload_the_record_fits_a_small_limit(catalog, seed):
    rnd = random.Random(seed)
    limit = rnd.choice([20_000, 50_000, 120_000])
    pieces = [b"\x00", b"\xff", "й".encode(), b'"', b"\\", b"a", b"\x01", "\U0001f600".encode(), b"\\ud800"]
    blob = b"".join(rnd.choice(pieces) for _ in range(rnd.randint(0, 60_000)))
    payloads = [
        blob,
        json.dumps({**EVENT, "guild_name": blob.decode("utf-8", "replace")}).encode(),
        json.dumps({**EVENT, **{blob.decode("utf-8", "replace")[:5000] + str(i): i for i in range(50)}}).encode(),
    ]
    for payload in payloads:
        assert fits(route(payload, SRC, catalog, "events", "events.dlq", limit=limit), limit)


def test_errors_are_sorted_into_permanent_and_transient():
    assert is_permanent(kafka_errors.MessageSizeTooLargeError())
    assert is_permanent(kafka_errors.RecordListTooLargeError())
    assert is_permanent(kafka_errors.InvalidTopicError())
    assert is_permanent(TypeError("value must be bytes"))
    wrapped = ProducerSendError("Error while sending")  # how Faust's producer raises Kafka's errors
    wrapped.__cause__ = kafka_errors.MessageSizeTooLargeError()
    assert is_permanent(wrapped)
    for transient in (
        kafka_errors.KafkaTimeoutError(),
        kafka_errors.KafkaConnectionError(),
        kafka_errors.NotLeaderForPartitionError(),
        kafka_errors.RequestTimedOutError(),
        kafka_errors.UnknownTopicOrPartitionError(),
        ConnectionResetError(),
        RuntimeError("?"),
    ):
        assert not is_permanent(transient), transient


def test_backoff_doubles_up_to_a_cap():
    assert [backoff_s(n) for n in (1, 2, 3, 4)] == [0.1, 0.2, 0.4, 0.8]
    assert backoff_s(50) == 10.0


# Arrays: one raw record per collector request ---------------------------------------------------------


def test_an_array_record_is_one_event_per_item_and_its_dead_letters_name_their_index(catalog):
    good = {**EVENT, "source": "default", "guild_id": "g"}
    raw = json.dumps([{**good, "event_id": "a"}, {**good, "event_id": "b", "role": 3}, "not an object"]).encode()
    routed = route_record(raw, SRC, catalog, "events", "events.dlq")
    assert [(at.index, out.topic) for at, out in routed] == [
        (0, "events.join_guild"),
        (1, "events.dlq"),
        (2, "events.dlq"),
    ]
    assert routed[0][1].key == b"default/a"
    wrong = json.loads(routed[1][1].value)
    assert wrong["reason"] == "field 'role': expected string, got integer 3"
    assert (wrong["source_offset"], wrong["source_index"], wrong["event_id"]) == (42, 1, "b")
    assert json.loads(wrong["raw"])["role"] == 3  # the item, written back as JSON
    assert routed[1][1].key == b"events:0:42:1" and routed[2][1].key == b"events:0:42:2"


def test_a_single_event_record_keeps_its_dead_letter_key_and_has_no_index(catalog):
    [(at, out)] = route_record(b"garbage", SRC, catalog, "events", "events.dlq")
    assert at == SRC and out.key == b"events:0:42" and "source_index" not in json.loads(out.value)


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        (b"[]", "an empty array: no event"),
        (b"[" + b",".join([b"{}"] * 1001) + b"]", "1001 events in one record; at most 1000"),
        (b"[1, 2", "payload is not valid JSON"),
        (b"[" * 5000 + b"]" * 5000, "payload is not valid JSON"),
    ],
)
def test_an_array_that_is_no_batch_of_events_is_one_dead_letter(catalog, raw, reason):
    [(at, out)] = route_record(raw, SRC, catalog, "events", "events.dlq", max_events=1000)
    assert at.index is None and out.dead and out.reason.startswith(reason)
    assert json.loads(out.value)["raw"] == raw.decode()


# The delivery loop against a scripted Kafka ---------------------------------------------------------


class ScriptedKafka:
    """Faust's producer and topic creation as the router sees them. Records sent in one turn of the
    event loop share a batch per topic, as in the real producer's accumulator; ``refuse(topic,
    values)`` decides each batch (an exception, or None: confirmed); ``refuse_topic(name)`` each
    topic creation."""

    def __init__(self, refuse=lambda topic, values: None, refuse_topic=lambda name: None):
        self.refuse = refuse
        self.refuse_topic = refuse_topic
        self.sent: list[tuple[str, bytes]] = []  # (topic, value) that Kafka "confirmed"
        self.batches = 0
        self.created: list[str] = []
        self.hold: asyncio.Event | None = None  # set: confirmations wait for it
        self._turn: list[tuple[str, bytes, asyncio.Future]] = []

    async def send(self, topic, key, value):
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        if not self._turn:
            loop.call_soon(lambda: asyncio.ensure_future(self._flush()))
        self._turn.append((topic, value, future))
        return future

    async def _flush(self):
        turn, self._turn = self._turn, []
        if self.hold is not None:
            await self.hold.wait()
        for topic in dict.fromkeys(t for t, _, _ in turn):
            batch = [(v, f) for t, v, f in turn if t == topic]
            self.batches += 1
            exc = self.refuse(topic, [v for v, _ in batch])
            for value, future in batch:
                if exc is None:
                    self.sent.append((topic, value))
                    future.set_result("metadata")
                else:
                    future.set_exception(exc)

    async def ensure(self, name):
        exc = self.refuse_topic(name)
        if exc is not None:
            raise exc
        self.created.append(name)

    def values(self, topic):
        return [json.loads(v) for t, v in self.sent if t == topic]


def make_router(catalog, kafka=None, **settings):
    kafka = kafka or ScriptedKafka()
    router = Router(Settings.from_env({}, **settings), lambda: catalog, lambda: catalog, kafka.send, kafka.ensure)
    router.kafka = kafka
    return router


def records(*values, partition=0):
    return [(v, Source("events", partition, 100 + i)) for i, v in enumerate(values)]


def event(n, **fields):
    return json.dumps({**EVENT, "event_id": f"e-{n}", **fields}).encode()


def test_every_copy_is_confirmed_before_handle_returns(catalog):
    router = make_router(catalog)
    batch = json.dumps([json.loads(event(4)), json.loads(event(5, role=7))]).encode()
    assert asyncio.run(router.handle(records(event(1), b"not json", event(2), batch))) == 5
    kafka = router.kafka
    assert sorted(e["event_id"] for e in kafka.values("events.join_guild")) == ["e-1", "e-2", "e-4"]
    letters = kafka.values("events.dlq")
    assert [(d["source_offset"], d.get("source_index")) for d in letters] == [(101, None), (103, 1)]
    assert kafka.created == ["events.dlq", "events.join_guild"]  # each topic made sure of once


def test_transient_failures_are_retried_until_they_pass(catalog, monkeypatch):
    monkeypatch.setattr("faust_app.router.backoff_s", lambda attempt: 0.01)
    failures = iter([kafka_errors.KafkaConnectionError(), kafka_errors.NotLeaderForPartitionError(), None])
    router = make_router(catalog, ScriptedKafka(lambda topic, values: next(failures)))
    asyncio.run(router.handle(records(event(1), event(2))))
    assert router.kafka.batches == 3
    assert [e["event_id"] for e in router.kafka.values("events.join_guild")] == [
        "e-1",
        "e-2",
    ]  # once, after two refusals


def test_a_batch_refused_for_good_is_sent_record_by_record_and_only_the_refused_one_becomes_a_dead_letter(catalog):
    def refuse(topic, values):  # the broker refuses any batch holding the marked record
        refused = any(b"e-bad" in v for v in values) and topic != "events.dlq"
        return kafka_errors.MessageSizeTooLargeError() if refused else None

    router = make_router(catalog, ScriptedKafka(refuse))
    asyncio.run(router.handle(records(event(1), event("bad"), event(3))))
    kafka = router.kafka
    assert sorted(e["event_id"] for e in kafka.values("events.join_guild")) == ["e-1", "e-3"]
    [letter] = kafka.values("events.dlq")
    assert letter["event_id"] == "e-bad" and letter["source_offset"] == 101
    assert letter["reason"].startswith("Kafka refused the record for events.join_guild: MessageSizeTooLargeError")
    assert json.loads(letter["raw"])["event_id"] == "e-bad"


def test_a_dead_letter_refused_for_good_is_written_without_its_payload(catalog):
    def refuse(topic, values):
        whole = topic == "events.dlq" and any(b"raw payload was dropped" not in v for v in values)
        return kafka_errors.MessageSizeTooLargeError() if whole else None

    router = make_router(catalog, ScriptedKafka(refuse))
    asyncio.run(router.handle(records(b"garbage")))
    [letter] = router.kafka.values("events.dlq")
    assert letter["raw"] == "" and letter["source_offset"] == 100
    assert letter["reason"].startswith("payload is not valid JSON")


def test_a_topic_kafka_refuses_costs_only_its_own_events(catalog, monkeypatch):
    monkeypatch.setattr("faust_app.router.backoff_s", lambda attempt: 0.01)

    def refuse_topic(name):
        return kafka_errors.InvalidTopicError(f"Cannot create topic: {name}") if name == "events.join_guild" else None

    router = make_router(catalog, ScriptedKafka(refuse_topic=refuse_topic))
    other = json.dumps({**EVENT, "event_id": "s-1", "event_type": "purchase_sword"}).encode()
    asyncio.run(router.handle(records(event(1), other)))
    assert [e["event_id"] for e in router.kafka.values("events.purchase_sword")] == ["s-1"]
    [letter] = router.kafka.values("events.dlq")
    assert letter["event_id"] == "e-1" and "Kafka refused the record for events.join_guild" in letter["reason"]
    assert "InvalidTopicError" in letter["reason"]


def test_the_worker_makes_sure_of_every_topic_of_the_catalog_as_it_starts_and_a_refused_one_stops_nothing(catalog):
    def refuse_topic(name):
        return kafka_errors.InvalidTopicError() if name == "events.level_up" else None

    router = make_router(catalog, ScriptedKafka(refuse_topic=refuse_topic))
    asyncio.run(router.prepare())
    expected = [t for t in catalog.topics("events", "events.dlq")[1:] if t != "events.level_up"]
    assert router.kafka.created == expected and "events.dlq" in expected


def test_a_dead_letter_topic_that_refuses_everything_is_retried_not_spun(catalog, monkeypatch):
    waits = []
    monkeypatch.setattr("faust_app.router.backoff_s", lambda attempt: waits.append(attempt) or 0.001)
    refusals = iter(range(5))

    def refuse(topic, values):  # the dead-letter topic refuses five times, then takes it
        return kafka_errors.InvalidTopicError() if next(refusals, None) is not None else None

    router = make_router(catalog, ScriptedKafka(refuse))
    asyncio.run(router.handle(records(b"garbage")))
    assert len(router.kafka.values("events.dlq")) == 1 and waits  # it backed off meanwhile


# The agent: acked only after delivery ---------------------------------------------------------------


def test_the_agent_acks_a_batch_only_once_every_copy_is_confirmed_and_in_offset_order(catalog):
    settings = Settings.from_env({})
    app = faust.App("test-router", broker="kafka://localhost:1", store="memory://")
    kafka = ScriptedKafka()
    kafka.hold = asyncio.Event()
    add_route_agent(app, Topics(app, settings), lambda: make_router(catalog, kafka), take_max=10, take_within_s=0.05)
    agent = app.agents["route"]

    async def scenario():
        async with agent.test_context() as context:
            events = [await context.put(event(n)) for n in range(3)]
            await asyncio.sleep(0.2)  # the batch is taken and sent; Kafka has not confirmed
            assert [e.message.acked for e in events] == [False, False, False]
            kafka.hold.set()
            await asyncio.sleep(0.2)
            assert [e.message.acked for e in events] == [True, True, True]
            assert [e["event_id"] for e in kafka.values("events.join_guild")] == ["e-0", "e-1", "e-2"]

    asyncio.run(scenario())


def test_a_batch_that_fails_crashes_the_worker_and_acks_nothing(catalog):
    settings = Settings.from_env({})
    app = faust.App("test-router-crash", broker="kafka://localhost:1", store="memory://")

    class Broken(Router):
        async def handle(self, records):
            raise RuntimeError("a bug")

    def broken_router():
        kafka = ScriptedKafka()
        return Broken(settings, lambda: catalog, lambda: catalog, kafka.send, kafka.ensure)

    add_route_agent(app, Topics(app, settings), broken_router, take_max=10, take_within_s=0.05)
    agent = app.agents["route"]

    async def scenario():
        async with agent.test_context() as context:
            first = await context.put(event(1))
            await asyncio.sleep(0.2)
            assert context.should_stop and not first.message.acked  # redelivered after the restart

    asyncio.run(scenario())


def test_compressed_records_can_be_read():
    from aiokafka import codec

    assert codec.has_lz4() and codec.has_snappy() and codec.has_zstd()  # cramjam: any producer's codec


def test_the_worker_collects_garbage_less_often_and_leaves_its_start_out():
    import gc

    from faust_app.app import GC_THRESHOLDS, tune_gc

    before = gc.get_threshold()
    try:
        gc.unfreeze()
        tune_gc()
        assert gc.get_threshold() == GC_THRESHOLDS and GC_THRESHOLDS[0] > before[0]
        assert gc.get_freeze_count() > 0
    finally:
        gc.unfreeze()
        gc.set_threshold(*before)
