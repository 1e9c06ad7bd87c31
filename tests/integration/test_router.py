"""The Faust router against the real broker: typed and dead-letter outputs."""

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from datetime import UTC, datetime
from pathlib import Path

import pytest
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import AdminClient

from questlog.kafka_admin import ensure_topics
from questlog.settings import REPO_ROOT
from tests.helpers import count_when, produce, query, read_topic, wait_for

pytestmark = pytest.mark.integration


def test_valid_events_reach_their_typed_topic_and_bad_ones_the_dead_letter_topic(live_settings):
    run = str(uuid.uuid4())
    good = {
        "event_id": f"{run}-good",
        "event_type": "join_guild",
        "received_at": "2026-11-29T10:00:00.000+00:00",
        "guild_id": "g1",
        "role": "member",
    }
    wrong_type = {**good, "event_id": f"{run}-bad", "role": 3}
    not_json = f"{run} this is not json".encode()
    produce(
        live_settings, live_settings.raw_topic, [json.dumps(good).encode(), json.dumps(wrong_type).encode(), not_json]
    )

    [typed] = read_topic(
        live_settings, live_settings.topic_for("join_guild"), lambda r: r.get("event_id", "").startswith(run), 1
    )
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


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


# No single record can stop the router ---------------------------------------------------------------

LIMIT = 1_000_000  # QUESTLOG_MAX_RECORD_BYTES' default


def produce_raw(settings, values: list[bytes | None]) -> list[int]:
    """Write ``values`` to the raw topic as another producer would (up to the broker's own limit);
    return each one's offset."""
    offsets: dict[int, int] = {}
    producer = Producer(
        {
            **settings.kafka_client(),
            "enable.idempotence": True,
            "message.max.bytes": 1_048_588,
            "linger.ms": 5,
        }
    )
    for i, value in enumerate(values):
        producer.produce(
            settings.raw_topic,
            value,
            key=f"poison-{i}".encode(),
            on_delivery=lambda err, msg, i=i: offsets.__setitem__(i, -1 if err else msg.offset()),
        )
    assert producer.flush(60) == 0
    assert -1 not in offsets.values() and len(offsets) == len(values), offsets
    return [offsets[i] for i in range(len(values))]


def test_a_poison_corpus_ends_as_dead_letters_that_fit_and_ordinary_events_still_land_exactly(pipeline):
    settings = pipeline.settings
    router_pid = pipeline.supervisor.running_pid("router")
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    base = {"event_type": "join_guild", "received_at": now, "source": "default"}
    near = {
        **base,
        "event_id": f"{run}-near",
        "received_at": now.replace("+00:00", "Z"),
        "client_ts": "2026-11-29T10:00:00Z",
        "guild_name": "",
    }
    near["guild_name"] = "x" * (LIMIT - len(json.dumps(near, separators=(",", ":"))) - len(near["event_id"]) - 10)
    poison = {
        "60,000 unknown fields": json.dumps(
            {**base, "event_id": f"{run}-fields", **{f"f{i}": 1 for i in range(60_000)}}
        ).encode(),
        "a 140k-character non-ASCII field name": json.dumps(
            {**base, "event_id": f"{run}-name", "й" * 140_000: 1}
        ).encode(),
        "a valid event a few bytes under the limit": json.dumps(near, separators=(",", ":")).encode(),
        "non-JSON bytes that escaping makes 6x larger": run.encode() + b"\x01" * 600_000 + b"\xff",
        "a null value": None,
    }
    big_but_fine = {**base, "event_id": f"{run}-big", "guild_name": "y" * 500_000}
    ordinary = [{**base, "event_id": f"{run}-ok-{i}", "guild_id": f"g{i % 7}"} for i in range(200)]
    values = list(poison.values()) + [json.dumps(big_but_fine).encode()] + [json.dumps(e).encode() for e in ordinary]
    offsets = produce_raw(settings, values)

    sql = f"SELECT count(*) FROM guild_joins WHERE event_id LIKE '{run}-ok-%'"
    assert count_when(settings, sql, 200, timeout_s=180) == 200  # exactly once, after the poison
    assert query(settings, f"SELECT length(guild_name) FROM guild_joins WHERE event_id = '{run}-big'") == [[500_000]]
    poison_offsets = offsets[: len(poison)]
    letters = {
        row[0]: row[1:]
        for row in query(
            settings,
            (
                "SELECT source_offset, reason, length(raw) FROM dead_letters "
                f"WHERE source_topic = '{settings.raw_topic}' AND source_offset IN ({', '.join(map(str, poison_offsets))})"
            ),
        )
    }
    assert sorted(letters) == sorted(poison_offsets), letters.keys()
    by_name = dict(zip(poison, (letters[o] for o in poison_offsets), strict=True))
    reason, _ = by_name["60,000 unknown fields"]
    assert reason.startswith("60000 fields not in the 'join_guild' schema: 'f0', 'f1'")
    reason, _ = by_name["a 140k-character non-ASCII field name"]
    assert "(140000 characters): not in the 'join_guild' schema" in reason
    reason, raw_length = by_name["a valid event a few bytes under the limit"]
    assert reason.startswith("the typed copy is ") and f"over the {LIMIT}-byte limit" in reason
    assert "[dead letter cut to fit" in reason and "sha256 " in reason and 0 < raw_length < LIMIT
    reason, raw_length = by_name["non-JSON bytes that escaping makes 6x larger"]
    assert reason.startswith("payload is not valid JSON") and "[dead letter cut to fit" in reason
    assert f"of {600_000 + len(run) + 1} characters" in reason and 0 < raw_length < 600_000
    reason, raw_length = by_name["a null value"]
    assert reason.startswith("payload is not valid JSON") and raw_length == 0
    assert query(settings, f"SELECT count(*) FROM guild_joins WHERE event_id IN ('{run}-near', '{run}-fields')") == [
        [0]
    ]
    assert pipeline.supervisor.running_pid("router") == router_pid  # never stopped, never restarted


def test_arrays_of_events_are_routed_item_by_item_and_arrays_that_are_no_batch_are_one_dead_letter(pipeline):
    settings = pipeline.settings
    router_pid = pipeline.supervisor.running_pid("router")
    run = uuid.uuid4().hex[:12]
    now = datetime.now(UTC).isoformat(timespec="milliseconds")
    base = {"event_type": "join_guild", "received_at": now, "source": "default", "guild_id": "g"}
    good = [{**base, "event_id": f"{run}-ok-{i}"} for i in range(900)]
    mixed = good[:300] + [{**base, "event_id": f"{run}-bad", "role": 3}, 42, "text", None] + good[300:]
    values = [
        json.dumps(mixed).encode(),  # a collector-style array with bad items among good ones
        json.dumps([{**base, "event_id": f"{run}-many-{i}"} for i in range(1001)]).encode(),  # over the limit
        b"[]",
        b"[" * 100_000 + b"]" * 100_000,  # nesting no parser follows
        json.dumps([{**base, "event_id": f"{run}-wide", "guild_name": "y" * 999_900}]).encode(),  # over it once routed
    ]
    offsets = produce_raw(settings, values)

    sql = f"SELECT count(*) FROM guild_joins WHERE event_id LIKE '{run}-ok-%'"
    assert count_when(settings, sql, 900, timeout_s=180) == 900  # every good item, once
    assert query(settings, f"SELECT count(*) FROM guild_joins WHERE event_id LIKE '{run}-many-%'") == [[0]]
    letters = query(
        settings,
        "SELECT source_offset, source_index, event_id, reason FROM dead_letters "
        f"WHERE source_topic = '{settings.raw_topic}' AND source_offset IN ({', '.join(map(str, offsets))}) "
        "ORDER BY source_offset, source_index",
    )
    mixed_at, many_at, empty_at, deep_at, wide_at = offsets
    by_place = {(o, i): (e, r) for o, i, e, r in letters}
    assert sorted(i for o, i in by_place if o == mixed_at) == [300, 301, 302, 303]
    assert by_place[(mixed_at, 300)] == (f"{run}-bad", "field 'role': expected string, got integer 3")
    assert by_place[(many_at, None)][1] == "1001 events in one record; at most 1000"
    assert by_place[(empty_at, None)][1] == "an empty array: no event"
    assert by_place[(deep_at, None)][1].startswith("payload is not valid JSON")
    assert (wide_at, 0) in by_place and by_place[(wide_at, 0)][1].startswith("the typed copy is ")
    assert len(letters) == 8  # and nothing else from these records
    assert pipeline.supervisor.running_pid("router") == router_pid  # never stopped, never restarted


# Two workers share the raw topic; one is killed -----------------------------------------------------


def group_state(settings, group):
    admin = AdminClient({**settings.kafka_client()})
    return admin.describe_consumer_groups([group])[group].result(timeout=10)


def committed(settings, group, topic, partitions) -> int:
    consumer = Consumer({**settings.kafka_client(), "group.id": group})
    try:
        return sum(
            max(tp.offset, 0)
            for tp in consumer.committed([TopicPartition(topic, p) for p in range(partitions)], timeout=10)
        )
    finally:
        consumer.close()


def read_all(settings, topic: str) -> list[str]:
    """Every event_id in ``topic``, up to each partition's end when called."""
    consumer = Consumer(
        {
            **settings.kafka_client(),
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    partitions = consumer.list_topics(topic, timeout=10).topics[topic].partitions
    ends = {p: consumer.get_watermark_offsets(TopicPartition(topic, p), timeout=10)[1] for p in partitions}
    consumer.assign([TopicPartition(topic, p, 0) for p in partitions])
    ids, done = [], {p for p, end in ends.items() if end == 0}
    try:
        while len(done) < len(ends):
            msg = consumer.poll(5.0)
            assert msg is not None, f"{topic} stopped short of its end offsets {ends}"
            if msg.error():
                continue
            ids.append(json.loads(msg.value())["event_id"])
            if msg.offset() + 1 >= ends[msg.partition()]:
                done.add(msg.partition())
    finally:
        consumer.close()
    return ids


def test_two_workers_share_the_partitions_and_lose_nothing_when_one_is_killed(live_settings, tmp_path):
    run = uuid.uuid4().hex[:12]
    raw, group, n = f"scale-{run}", f"scale-{run}", 30_000
    ensure_topics(live_settings.kafka_client(), [raw], 4)
    env = {
        **os.environ,
        **live_settings.to_env(),
        "QUESTLOG_RAW_TOPIC": raw,
        "QUESTLOG_DLQ_TOPIC": f"{raw}.dlq",
        "QUESTLOG_ROUTER_ID": group,
        "QUESTLOG_TOPIC_PARTITIONS": "4",
        "QUESTLOG_HOME": str(tmp_path),
        "QUESTLOG_KAFKA_PASSWORD_FILE": str(live_settings.kafka_password_path),  # the admin: a super user
    }
    workers = []
    for port in (free_port(), free_port()):
        log = open(tmp_path / f"worker-{port}.log", "wb")
        workers.append(
            subprocess.Popen(
                [str(Path(sys.executable).parent / "faust"), "-A", "faust_app.app", "worker", "-l", "info"],
                cwd=REPO_ROOT,
                env={**env, "QUESTLOG_ROUTER_WEB_PORT": str(port)},
                stdout=log,
                stderr=subprocess.STDOUT,
            )
        )
    try:

        def both_assigned():
            group_desc = group_state(live_settings, group)
            # each Faust worker also holds a partition of its app's leader topic: count the raw topic's
            held = [sum(tp.topic == raw for tp in m.assignment.topic_partitions) for m in group_desc.members]
            return group_desc.state.name == "STABLE" and len(held) == 2 and sum(held) == 4 and min(held) > 0

        wait_for(both_assigned, 120, 1.0, "two workers sharing four partitions")
        ids = [f"{run}-{i}" for i in range(n)]
        producer = Producer({**live_settings.kafka_client(), "linger.ms": 20})
        received = datetime.now(UTC).isoformat(timespec="milliseconds")
        records = 0
        for i in range(0, n, 10):  # records as the collector writes requests: 10 events an array, by key
            batch = [
                {"event_id": event_id, "event_type": "join_guild", "source": "default", "received_at": received}
                | {"guild_id": "g"}
                for event_id in ids[i : i + 10]
            ]
            producer.produce(raw, json.dumps(batch).encode(), key=ids[i].encode())
            records += 1
            if records % 500 == 0:
                producer.flush(30)
                if records == 1000:  # mid-stream: the second worker dies without a word
                    wait_for(lambda: committed(live_settings, group, raw, 4) > 0, 60, 0.2, "routing to begin")
                    workers[1].send_signal(signal.SIGKILL)
        assert producer.flush(30) == 0
        wait_for(lambda: committed(live_settings, group, raw, 4) == records, 120, 1.0, "every raw record committed")
        assert workers[1].wait(5) == -signal.SIGKILL and workers[0].poll() is None

        routed = read_all(live_settings, f"{raw}.join_guild")
        assert set(routed) == set(ids)  # every event routed, none lost
        # The killed worker's last batch, delivered but not committed, was routed again by the other:
        # those repeats (and only those) are in the typed topic, and the sink drops them by event_id.
        print(f"{len(routed) - n} repeated copies of {n} events after the kill")
        assert len(routed) - n <= 10_000  # at most what the killed worker had taken but not committed
    finally:
        for worker in workers:
            if worker.poll() is None:
                worker.terminate()
                try:
                    worker.wait(30)
                except subprocess.TimeoutExpired:
                    worker.kill()
