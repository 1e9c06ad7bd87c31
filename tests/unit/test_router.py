"""The router's size fitting (pure) and its delivery loop against a scripted producer: what is
written, what is retried, and that offsets are committed only after every copy is confirmed."""

import asyncio
import hashlib
import json
import random
from types import SimpleNamespace

import pytest
from aiokafka import TopicPartition
from aiokafka import errors as kafka_errors
from aiokafka.producer.message_accumulator import BatchBuilder

from faust_app.router import Router, backoff_s, is_permanent
from faust_app.routing import MAX_RECORD_BYTES, Source, route
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


# The delivery loop against a scripted producer ----------------------------------------------------


class ScriptedProducer:
    """Records every batch sent; ``refuse(topic, records) -> exception or None`` decides each."""

    def __init__(self, refuse):
        self.refuse = refuse
        self.sent = []  # (topic, [values]) that Kafka "confirmed"
        self.attempts = 0

    def create_batch(self):
        batch = BatchBuilder(1_000_000, 0)
        batch.items = []
        append = batch.append

        def recording_append(*, key, value, timestamp):
            metadata = append(key=key, value=value, timestamp=timestamp)
            if metadata is not None:
                batch.items.append(value)
            return metadata

        batch.append = recording_append
        return batch

    async def send_batch(self, batch, topic, *, partition):
        self.attempts += 1
        fut = asyncio.get_running_loop().create_future()
        exc = self.refuse(topic, batch.items)
        if exc is None:
            asyncio.get_running_loop().call_later(0.01, fut.set_result, "metadata")
            self.sent.append((topic, list(batch.items)))
        else:
            fut.set_exception(exc)
        return fut


class ScriptedConsumer:
    def __init__(self, producer):
        self.producer = producer
        self.commits = []

    async def commit(self, offsets):
        # what Kafka had confirmed when the offsets were committed
        self.commits.append((dict(offsets), sum(len(v) for _, v in self.producer.sent)))


def make_router(catalog, refuse, limit=MAX_RECORD_BYTES):
    router = Router(Settings.from_env({}), lambda: catalog, lambda: catalog, limit)
    router.producer = ScriptedProducer(refuse)
    router.consumer = ScriptedConsumer(router.producer)
    router._topics.update({"events.join_guild", "events.dlq", "events.purchase_sword"})
    return router


def records(*values, partition=0):
    tp = TopicPartition("events", partition)
    return {tp: [SimpleNamespace(value=v, offset=100 + i) for i, v in enumerate(values)]}


def event(n, **fields):
    return json.dumps({**EVENT, "event_id": f"e-{n}", **fields}).encode()


def test_offsets_are_committed_only_after_every_copy_is_confirmed(catalog):
    router = make_router(catalog, lambda topic, items: None)
    asyncio.run(router.process(records(event(1), b"not json", event(2))))
    assert [(t, len(v)) for t, v in router.producer.sent] == [("events.join_guild", 2), ("events.dlq", 1)]
    assert router.consumer.commits == [({TopicPartition("events", 0): 103}, 3)]


def test_transient_failures_are_retried_without_committing_until_they_pass(catalog, monkeypatch):
    monkeypatch.setattr("faust_app.router.backoff_s", lambda attempt: 0.01)
    failures = iter([kafka_errors.KafkaConnectionError(), kafka_errors.NotLeaderForPartitionError(), None])
    router = make_router(catalog, lambda topic, items: next(failures))
    asyncio.run(router.process(records(event(1), event(2))))
    assert router.producer.attempts == 3
    assert [len(v) for _, v in router.producer.sent] == [2]  # delivered once, after two refusals
    assert router.consumer.commits == [({TopicPartition("events", 0): 102}, 2)]


def test_a_batch_refused_for_good_is_split_and_only_the_refused_record_becomes_a_dead_letter(catalog):
    def refuse(topic, items):  # the broker refuses any batch holding the marked record
        return (
            kafka_errors.MessageSizeTooLargeError()
            if any(b"e-bad" in v for v in items) and topic != "events.dlq"
            else None
        )

    router = make_router(catalog, refuse)
    asyncio.run(router.process(records(event(1), event("bad"), event(3))))
    typed = [json.loads(v)["event_id"] for t, vs in router.producer.sent if t == "events.join_guild" for v in vs]
    letters = [json.loads(v) for t, vs in router.producer.sent if t == "events.dlq" for v in vs]
    assert sorted(typed) == ["e-1", "e-3"]
    assert len(letters) == 1 and letters[0]["event_id"] == "e-bad"
    assert letters[0]["reason"].startswith("Kafka refused the record for events.join_guild: MessageSizeTooLargeError")
    assert json.loads(letters[0]["raw"])["event_id"] == "e-bad" and letters[0]["source_offset"] == 101
    assert router.consumer.commits == [({TopicPartition("events", 0): 103}, 3)]


def test_a_dead_letter_refused_for_good_is_written_without_its_payload(catalog):
    def refuse(topic, items):
        return (
            kafka_errors.MessageSizeTooLargeError()
            if any(b"raw payload was dropped" not in v for v in items) and topic == "events.dlq"
            else None
        )

    router = make_router(catalog, refuse)
    asyncio.run(router.process(records(b"garbage")))
    [(topic, [value])] = router.producer.sent
    letter = json.loads(value)
    assert topic == "events.dlq" and letter["raw"] == "" and letter["source_offset"] == 100
    assert letter["reason"].startswith("payload is not valid JSON")
    assert router.consumer.commits == [({TopicPartition("events", 0): 101}, 1)]


def test_a_routing_loop_that_fails_stops_the_worker_instead_of_idling(catalog):
    router = make_router(catalog, lambda topic, items: None)
    crashed = []

    class Undecodable:
        async def getmany(self, **kwargs):
            raise RuntimeError("Libraries for lz4 compression codec not found")

    async def crash(exc):
        crashed.append(exc)

    router.consumer = Undecodable()
    router.crash = crash
    asyncio.run(router._route_forever())
    assert [str(e) for e in crashed] == ["Libraries for lz4 compression codec not found"]


def test_compressed_records_can_be_read():
    from aiokafka import codec

    assert codec.has_lz4() and codec.has_snappy() and codec.has_zstd()  # cramjam: any producer's codec
