"""ops.load: the simulated game and a run against an in-process collector."""

from __future__ import annotations

import random
from collections import Counter

from ops.load import Game, run_load, spoil
from questlog.catalog import validate
from tests.unit.test_client import Collector


def test_the_game_covers_every_type_and_stays_consistent(catalog):
    game = Game(catalog, players=20, rng=random.Random(7))
    guild: dict[str, str | None] = {}
    level: dict[str, int] = {}
    seen: Counter = Counter()
    for _ in range(5000):
        event_type, fields = game.next_event()
        event = {"event_type": event_type, "event_id": "x", "received_at": "2026-01-01T00:00:00+00:00", **fields}
        assert validate(event, catalog) == [], event
        seen[event_type] += 1
        user = fields["user_id"]
        if event_type == "join_guild":
            assert guild.get(user) is None
            guild[user] = fields["guild_id"]
        elif event_type == "leave_guild":
            assert guild.get(user) == fields["guild_id"] and fields["days_in_guild"] >= 0
            guild[user] = None
        elif event_type == "level_up":
            assert fields["level"] == level.get(user, 1) + 1
            level[user] = fields["level"]
        elif event_type == "purchase_sword":
            assert fields["price"] > 0 and fields["currency"] == "gold"
    assert set(seen) == set(catalog.names)
    assert seen["purchase_sword"] > seen["join_guild"] > 0


def test_spoiled_events_are_refused_by_the_catalog(catalog):
    rng = random.Random(3)
    game = Game(catalog, players=5, rng=rng)
    for _ in range(300):
        event_type, fields = game.next_event()
        bad = spoil(event_type, fields, catalog.get(event_type), rng)
        event = {"event_type": event_type, "event_id": "x", "received_at": "2026-01-01T00:00:00+00:00", **bad}
        assert validate(event, catalog), event


def test_run_load_counts_what_was_accepted(catalog):
    collector = Collector()
    collector.script = [(503, {"Retry-After": "0.1"})]
    try:
        result = run_load(
            collector.url,
            catalog,
            players=10,
            rate=2000,
            count=1500,
            bad_share=0.05,
            seed=1,
            batch_size=100,
            flush_interval_s=0.05,
        )
    finally:
        collector.close()
    assert result.total_sent == 1500 and sum(result.accepted.values()) == 1500
    assert 30 < sum(result.bad_sent.values()) < 150
    ids = collector.ids()
    assert len(set(ids)) == 1500 and set(ids) == result.accepted_ids
    assert all(i.startswith(result.run + "-") for i in ids)
    assert 0.5 < result.elapsed_s < 10  # paced at about 2,000/s
    assert "accepted" in result.summary() and "purchase_sword" in result.summary()


def test_the_game_plays_sessions_with_gaps_between_them(catalog):
    """Each session opens with a `default` hit; within one a player acts every 90 s or so of game
    time, between two they are away 40 min to 5 h: so gaps over the sessions' 30 min split a
    player's events exactly at the hits that open a session."""
    game = Game(catalog, players=40, rng=random.Random(11))
    times: dict[str, list[float]] = {}
    opens: Counter = Counter()
    for _ in range(6000):
        event_type, fields = game.next_event()
        times.setdefault(fields["user_id"], []).append(game.clock)
        opens[fields["user_id"]] += event_type == "default" and len(fields) == 1
    sessions = {user: 1 + sum(b - a > 1800 for a, b in zip(ts, ts[1:], strict=False)) for user, ts in times.items()}
    assert sum(sessions.values()) >= 2 * len(times)  # most players come back
    for user, n in sessions.items():
        assert n <= opens[user], user  # a `default` hit may also happen mid-session
    assert 2 * 3600 < game.clock < 48 * 3600
