"""Sessions: the router's activity records and the agent's decisions (faust_app.sessions), no services."""

from __future__ import annotations

import json

import orjson
import pytest
from aiokafka.partitioner import DefaultPartitioner

from faust_app.sessions import (
    RECENT_IDS,
    ActivityFeed,
    Sessionizer,
    event_time_ms,
    iso,
    partition_of,
    player_key,
    session_id,
    to_ms,
)
from questlog.catalog import SESSIONS_TABLE, CatalogError, EventType, load_catalog
from questlog.catalog.model import Catalog

T0 = to_ms("2026-12-01T10:00:00.000+00:00")
MIN = 60_000
GAP_S = 1800


def ev(user, minute, n=0, event_type="purchase_sword", source="default", client_ts=True):
    t = iso(T0 + minute * MIN)
    return {
        "event_id": f"{user}-{n}",
        "source": source,
        "user_id": user,
        "event_type": event_type,
        "received_at": iso(T0 + minute * MIN + 5000) if client_ts else t,
        "client_ts": t if client_ts else None,
    }


class Table(dict):
    """The Faust table as the sessionizer sees it: get, items, and a checkpoint after each batch."""

    def run(self, core: Sessionizer, batch) -> list[dict]:
        out = core.apply(batch, self.get, self.items)
        self.update(core.checkpoint())
        return [orjson.loads(v) for _, v in out.sessions]


def activity(events, partitions=1) -> list[tuple[int, bytes]]:
    return ActivityFeed(partitions).records(events)


def sessionizer(clock=lambda: 1e10, **kw) -> Sessionizer:
    args = dict(gap_s=GAP_S, lateness_s=120, tick_s=10, client_ts_max_age_s=86400)
    args.update(kw)
    return Sessionizer(clock=clock, **args)


def tick(ms):
    return orjson.dumps({"tick": ms})


def batch_of(records, offset=0):
    return [(p, offset + i, v) for i, (p, v) in enumerate(records)]


def test_event_time_is_client_ts_when_plausible_else_received_at():
    received = "2026-12-01T10:00:00.000+00:00"
    max_age = 3600_000
    assert event_time_ms(received, "2026-12-01T09:30:00.000+00:00", max_age) == to_ms("2026-12-01T09:30:00.000+00:00")
    assert event_time_ms(received, None, max_age) == to_ms(received)
    assert event_time_ms(received, "2026-12-01T10:00:01.000+00:00", max_age) == to_ms(received)  # ahead: the server's
    assert event_time_ms(received, "2026-12-01T08:00:00.000+00:00", max_age) == to_ms(received)  # too old
    zoned = "2026-12-01T10:30:00.000+01:00"  # 09:30 UTC
    assert event_time_ms(received, zoned, max_age) == to_ms("2026-12-01T09:30:00.000+00:00")


def test_the_partition_is_kafkas_default_partitioners_for_the_player_key():
    partitioner = DefaultPartitioner()
    for user in ("a", "player-17", "ünïcode", "x" * 200):
        key = player_key("default", user)
        assert key == f"default/{user}".encode()
        for n in (1, 3, 4, 12):
            assert partition_of(key, n) == partitioner(key, list(range(n)), list(range(n)))


def test_activity_groups_events_by_partition_and_skips_events_without_a_player():
    feed = ActivityFeed(4)
    events = [ev(f"p{i}", i) for i in range(40)] + [dict(ev("x", 0), user_id=None)]
    records = feed.records(events)
    assert feed.without_player == 1
    listed = {p: orjson.loads(v)["e"] for p, v in records}
    assert sum(len(v) for v in listed.values()) == 40
    for p, items in listed.items():
        for source, user, *_ in items:
            assert partition_of(player_key(source, user), 4) == p
    assert {p for p, _ in feed.ticks(5)} == {0, 1, 2, 3}


def test_scripted_players_with_known_gaps_give_exactly_the_expected_sessions():
    # a: bursts at 0-10 min, 50-55 (gap 40 > 30), 200; b: 0..100 every 20 min (gaps < 30: one session)
    a = [ev("a", m, i) for i, m in enumerate([0, 5, 10, 50, 52, 55, 200])]
    b = [ev("b", m, i, event_type="join_guild") for i, m in enumerate(range(0, 101, 20))]
    table = Table()
    core = sessionizer()
    closed = table.run(core, batch_of(activity(a + b)))
    # the watermark is at 200 - 2 min: a's first two sessions and b's (ended at 100 + 30 <= 198) are closed
    assert sorted((s["user_id"], s["events"], s["duration_s"]) for s in closed) == [
        ("a", 3, 300.0),
        ("a", 3, 600.0),
        ("b", 6, 6000.0),
    ]
    first = next(s for s in closed if s["user_id"] == "a" and s["events"] == 3 and s["duration_s"] == 600)
    assert first["first_event_id"] == "a-0" and first["last_event_id"] == "a-2"
    assert first["session_start"] == iso(T0) and first["session_end"] == iso(T0 + 10 * MIN)
    assert json.loads(first["events_by_type"]) == {"purchase_sword": 3}
    assert first["session_id"] == session_id("default", "a", "a-0")
    # a's last session stays open until the clock closes it on an idle partition
    assert table.run(core, [(0, 100, tick(T0 + 300 * MIN))]) == []  # events came just now: not idle
    core.clock = lambda: 1e10 + 11  # 11 s later, no events since
    (last,) = table.run(core, [(0, 101, tick(T0 + 300 * MIN))])
    assert (last["user_id"], last["events"], last["first_event_id"]) == ("a", 1, "a-6")


def test_events_in_any_order_give_the_same_sessions():
    events = [ev("a", m, i) for i, m in enumerate([0, 5, 10, 50, 52, 55, 200, 400])]
    outs = []
    for order in (events, events[::-1], events[3:] + events[:3]):
        table = Table()
        core = sessionizer(lateness_s=10**6)  # every event in time whatever the order
        closed = table.run(core, batch_of(activity(order)))
        core.clock = lambda: 2e10
        closed += table.run(core, [(0, 99, tick(T0 + 10**10))])
        outs.append(sorted((s["session_id"], s["events"], s["session_start"], s["session_end"]) for s in closed))
    assert outs[0] == outs[1] == outs[2] and len(outs[0]) == 4


def test_an_activity_record_delivered_again_is_skipped_and_a_routed_again_event_is_a_duplicate():
    table = Table()
    core = sessionizer()
    records = activity([ev("a", 0, 0), ev("a", 1, 1)])
    table.run(core, batch_of(records, offset=7))
    out = core.apply(batch_of(records, offset=7), table.get, table.items)  # a re-delivery from the commit
    assert out.reset
    assert out.counts == {"replayed": 2}
    out = core.apply(batch_of(records, offset=8), table.get, table.items)  # the router's crash: routed again
    assert out.counts == {"duplicate": 2}
    table.update(core.checkpoint())
    core.clock = lambda: 2e10
    (s,) = table.run(core, [(0, 20, tick(T0 + 10**8))])
    assert s["events"] == 2


def test_only_the_last_event_ids_are_remembered():
    table = Table()
    core = sessionizer()
    events = [ev("a", 0, i) for i in range(RECENT_IDS + 5)]
    table.run(core, batch_of(activity(events)))
    assert len(orjson.loads(table[player_key("default", "a")])["r"]) == RECENT_IDS


def test_late_events_join_within_the_gap_open_a_session_after_a_close_or_are_dropped():
    table = Table()
    core = sessionizer()
    table.run(core, batch_of(activity([ev("a", 0, 0), ev("a", 10, 1), ev("b", 100, 0)])))
    # watermark 98 min: a's session (0-10) closed
    assert orjson.loads(table[player_key("default", "a")])["c"] == T0 + 10 * MIN
    late = activity([ev("a", 5, 2), ev("a", 20, 3), ev("b", 90, 1)])
    out = core.apply(batch_of(late, offset=10), table.get, table.items)
    # a@5: inside the closed session, dropped; a@20: after it, a session of its own; b@90: joins b's
    assert out.counts == {"late_dropped": 1, "late_new_session": 1, "late_joined": 1}
    (s,) = [orjson.loads(v) for _, v in out.sessions]  # a@20 ends at 20 + 30 <= 98: closed at once
    assert (s["first_event_id"], s["late_events"]) == ("a-3", 1)


def test_a_busy_partition_ignores_the_clock_so_a_backlog_sessionises_as_it_did_live():
    clock = [1e10]
    table = Table()
    core = sessionizer(clock=lambda: clock[0])
    # a replay of an old backlog: every tick comes while events keep coming
    closed = []
    for i, m in enumerate([0, 5, 10, 15, 20]):
        clock[0] += 5
        closed += table.run(core, batch_of(activity([ev("a", m, i)]), offset=i * 2) + [(0, i * 2 + 1, tick(10**13))])
    assert closed == []
    clock[0] += 20
    (s,) = table.run(core, [(0, 99, tick(10**13))])
    assert s["events"] == 5


def test_rebuild_indexes_the_open_sessions_of_the_assigned_partitions():
    table = Table()
    core = sessionizer()
    table.run(core, batch_of(activity([ev(f"p{i}", 0, 0) for i in range(20)], partitions=2)))
    clock = [2e10]
    fresh = sessionizer(clock=lambda: clock[0])
    ones = {k for k, v in table.items() if orjson.loads(v)["p"] == 1}
    assert fresh.rebuild(table.items(), {1}) == len(ones)
    assert table.run(fresh, [(1, 49, tick(T0 + 10**8))]) == []  # a tick's time after a start: not yet idle
    clock[0] += 10
    closed = table.run(fresh, [(1, 50, tick(T0 + 10**8))])
    assert {player_key(s["source"], s["user_id"]) for s in closed} == ones


def test_sessions_is_questlogs_own_table_and_no_event_type_may_take_it():
    catalog = load_catalog()
    sessions = next(t for t in catalog.tables() if t.name == SESSIONS_TABLE)
    assert (sessions.topic, sessions.key, sessions.time_column) == (
        "events.sessions",
        ("source", "session_id"),
        "session_start",
    )
    assert "sessions" not in catalog
    for name, table in (("sessions", "x"), ("x", "sessions"), ("y", "dead_letters")):
        bad = Catalog({**catalog.types, name: EventType(name, table, "", ())})
        with pytest.raises(CatalogError, match="Questlog's own"):
            bad.tables()


def test_the_stack_makes_the_topics_faust_uses_for_sessions():
    from faust_app import app as module

    settings = module._settings
    table = module.app.tables["sessions"]
    assert table.changelog_topic.get_topic_name() == settings.sessions_changelog_topic
    assert table.use_partitioner  # the changelog partition of a player is Kafka's murmur2, as the activity's
    assert module.app.agents["sessions"].channel.get_topic_name() == settings.activity_topic


def test_entries_stay_in_memory_between_checkpoints_and_a_redelivery_reads_the_table_again():
    table = Table()
    core = sessionizer()
    first = activity([ev("a", 0, 0), ev("b", 0, 0)])
    core.apply(batch_of(first), table.get, table.items)
    table.update(core.checkpoint())
    core.apply(batch_of(activity([ev("a", 1, 1)]), offset=2), table.get, table.items)
    assert orjson.loads(table[player_key("default", "a")])["o"] == 0  # not written until the checkpoint
    # a crash before the checkpoint: Faust re-delivers from its commit (offset 2), onto the table
    out = core.apply(batch_of(activity([ev("a", 1, 1)]), offset=2), table.get, table.items)
    assert out.reset and out.counts == {"in_time": 1}  # applied once, from the table's entry
    writes = core.checkpoint()
    assert list(writes) == [player_key("default", "a")]
    entry = orjson.loads(writes[player_key("default", "a")])
    assert entry["o"] == 2 and entry["s"][0][4] == {"purchase_sword": 2}


def test_a_forgotten_players_entry_leaves_memory_and_their_late_activity_makes_none_again():
    table = Table()
    core = sessionizer()
    table.run(core, batch_of(activity([ev("gone", 0, 0), ev("kept", 0, 0)])))
    gone = player_key("default", "gone")
    assert gone in table and core.open_players == 2
    # the agent deletes the entry from the table and tells the sessionizer
    del table[gone]
    core.forget([gone])
    assert core.open_players == 1

    # their activity written before the router knew: counted and skipped; nobody else's touched
    def drop(source, user):
        return user == "gone"

    out = core.apply(batch_of(activity([ev("gone", 1, 1), ev("kept", 1, 1)]), offset=1), table.get, table.items, drop)
    assert out.counts == {"suppressed": 1, "in_time": 1}
    writes = core.checkpoint()
    assert list(writes) == [player_key("default", "kept")]
    table.update(writes)
    core.clock = lambda: 2e10
    closed = table.run(core, [(0, 9, tick(T0 + 10**8))])
    assert [(s["user_id"], s["events"]) for s in closed] == [("kept", 2)] and gone not in table


def test_the_agent_finds_the_forgotten_players_among_its_own_partitions_entries(tmp_path):
    from faust_app.session_agent import forgotten_players, requested
    from questlog.privacy import RequestStore, Suppressions
    from questlog.settings import Settings

    settings = Settings.from_env({}).replace(home=str(tmp_path))
    RequestStore(settings).record("gone", None)
    RequestStore(settings).record("mobile-only", "mobile")
    sup = Suppressions(settings)
    keys = [
        player_key(s, u)
        for s, u in [
            ("default", "gone"),
            ("web", "gone"),
            ("default", "kept"),
            ("mobile", "mobile-only"),
            ("web", "mobile-only"),
        ]
    ]
    everywhere = forgotten_players(requested(sup.hasher, sup.any_source, sup.by_source), keys, set(range(4)), 4)
    assert everywhere == [player_key("default", "gone"), player_key("web", "gone"), player_key("mobile", "mobile-only")]
    mine = {partition_of(player_key("default", "gone"), 4)}
    match = requested(sup.hasher, sup.any_source, sup.by_source)
    assert player_key("default", "gone") in forgotten_players(match, keys, mine, 4)
    assert all(partition_of(k, 4) in mine for k in forgotten_players(match, keys, mine, 4))
    # only requests added since the last purge: the older one is not looked for again
    only_new = requested(sup.hasher, frozenset(), sup.by_source)
    assert forgotten_players(only_new, keys, set(range(4)), 4) == [player_key("mobile", "mobile-only")]


def test_the_agent_writes_a_batch_of_entries_to_the_changelog_at_once_then_to_the_table():
    import asyncio

    import faust

    from faust_app.session_agent import write

    app = faust.App("test-sessions-write", broker="kafka://localhost:1", store="memory://")
    table = app.Table("sessions", default=None, partitions=4, key_type=bytes, value_type=bytes, use_partitioner=True)
    table.data[b"default/gone"] = b"{}"
    sent = []

    class Producer:
        async def send(self, topic, key, value, partition, timestamp, headers):
            assert key not in table.data or value is None  # the changelog first, then the store
            sent.append((topic, partition, key, value))
            future = asyncio.get_running_loop().create_future()
            future.set_result(None)
            return future

    entries = {player_key("default", f"p{i}"): b"{}" for i in range(300)} | {b"default/gone": None}
    asyncio.run(write(Producer(), table, entries, 4))
    assert len(sent) == 301 and {t for t, *_ in sent} == {"test-sessions-write-sessions-changelog"}
    assert all(p == partition_of(k, 4) for _, p, k, _ in sent)  # Faust's partitioner's choice
    assert (sent[-1][2], sent[-1][3]) == (b"default/gone", None)  # a tombstone
    assert b"default/gone" not in table.data and len(table.data) == 300 and table.get(b"default/p7") == b"{}"
    assert app.producer.buffer.size == 0  # nothing went through Faust's per-message buffer
