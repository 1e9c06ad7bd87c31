"""`questlog load`: traffic that looks like a game, sent with questlog_client, and a check that it
all landed.

Simulated players come online for sessions (a `default` hit opens each one; a player then acts
every minute or two of game time, and stays away 40 minutes to 5 hours between sessions), buy swords with
prices, join and leave guilds (a leave only from a guild they are in, with the days they spent in
it), and level up (levels only go up, experience accumulates). Every other type in the deployed
catalog gets events too, with values of its fields' types, so a new type is loaded without a
change here. ``bad_share`` of the events are deliberately wrong for their schema (a price that is
not a number, a level-up without its level, a field no schema has): the collector accepts them and
the router turns them into dead letters. Every event id starts with the run's id, so
:func:`verify` can find this run's rows in Trino and check that each accepted event landed exactly
once: a good one in its type's table, a bad one in ``dead_letters``.

Game time runs faster than the wall clock and is sent as each event's ``client_ts``: a run of a
minute covers hours of play ending now (at most ``MAX_HISTORY_S``), so the router's sessions
(faust_app.sessions, which take ``client_ts`` as the event's time) have gaps and lengths like a
game's, and the tables have something to plot.
"""

from __future__ import annotations

import heapq
import random
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from questlog.catalog import DEAD_LETTER_TABLE, Catalog, EventType
from questlog_client import Tracker

SWORDS = {"longsword": 40.0, "katana": 55.0, "rapier": 30.0, "claymore": 70.0, "scimitar": 35.0}
RARITY = (("common", 1.0, 70), ("rare", 2.5, 24), ("legendary", 10.0, 6))
CLASSES = ("mage", "warrior", "rogue", "cleric", "ranger")
GUILDS = [
    (f"g-{i}", name)
    for i, name in enumerate(
        (
            "Night Owls",
            "Iron Wolves",
            "Dawnbreakers",
            "Silver Hand",
            "Ashen Court",
            "Tide Callers",
            "Emberkin",
            "Frostborn",
        )
    )
]
LEAVE_REASONS = (("quit", 70), ("kicked", 20), ("disbanded", 10))
# What an online player does next, by weight; guild moves only when they make sense.
ACTIONS = {"purchase_sword": 35, "level_up": 20, "default": 25, "join_guild": 10, "leave_guild": 10}
SESSION_EVENTS = (5, 40)  # events a session lasts, at random within
AWAY_S = (2400.0, 18000.0)  # game time a player stays away between sessions, at random within
MEAN_GAP_S = 90.0  # mean game time between two events of an online player
# The most game time a run covers (client_ts older than QUESTLOG_SESSION_CLIENT_TS_MAX_AGE_S, a
# day by default, would not be an event's time): a longer run plays faster.
MAX_HISTORY_S = 20 * 3600.0
DAY_S = 86_400.0


@dataclass
class Player:
    user_id: str
    character_class: str
    level: int = 1
    xp_total: int = 0
    guild: tuple[str, str] | None = None
    joined_at: float = 0.0  # simulated time
    session_left: int = 0
    last_level_at: float = 0.0
    back_at: float = 0.0  # game time it may come online again


@dataclass
class Game:
    """The simulated world: players, their sessions and the next event one of them makes."""

    catalog: Catalog
    players: int
    rng: random.Random
    clock: float = 0.0  # game time, seconds; each event moves it on
    mean_gap_s: float = MEAN_GAP_S  # between two events of one online player
    online: list[Player] = field(default_factory=list)
    offline: list[tuple[float, int, Player]] = field(default_factory=list)  # a heap by back_at

    def __post_init__(self) -> None:
        players = [Player(f"p{i:05d}", self.rng.choice(CLASSES)) for i in range(self.players)]
        self.rng.shuffle(players)
        self.offline = [(0.0, i, p) for i, p in enumerate(players)]
        self._seq = len(players)
        self.known = {et.name for et in self.catalog}
        self.other_types = [et for et in self.catalog if et.name not in ACTIONS]

    @property
    def target_online(self) -> int:
        return max(1, self.players // 2)

    def next_event(self) -> tuple[str, dict[str, Any]]:
        """(event_type, fields) of the next thing that happens, at game time ``clock``."""
        self.clock += self.rng.expovariate(max(1, len(self.online)) / self.mean_gap_s)
        if not self.online and self.offline[0][0] > self.clock:
            self.clock = self.offline[0][0]  # nobody plays until the first one is back
        if self.offline and self.offline[0][0] <= self.clock and len(self.online) < self.target_online:
            player = heapq.heappop(self.offline)[2]
            player.session_left = self.rng.randint(*SESSION_EVENTS)
            self.online.append(player)
            return "default", {"user_id": player.user_id}  # the session opens with a hit
        i = self.rng.randrange(len(self.online))
        player = self.online[i]
        player.session_left -= 1
        if player.session_left <= 0:
            self.online.pop(i)
            player.back_at = self.clock + self.rng.uniform(*AWAY_S)
            self._seq += 1
            heapq.heappush(self.offline, (player.back_at, self._seq, player))
        if self.other_types and self.rng.random() < 0.05 * len(self.other_types):
            return _generic(self.rng.choice(self.other_types), player, self.rng)
        kind = self.rng.choices(list(ACTIONS), weights=list(ACTIONS.values()))[0]
        if kind in ("join_guild", "leave_guild"):
            kind = "leave_guild" if player.guild else "join_guild"
        if kind not in self.known:
            kind = "default"
        return kind, getattr(self, "_" + kind)(player)

    def _default(self, p: Player) -> dict[str, Any]:
        return {"user_id": p.user_id}

    def _purchase_sword(self, p: Player) -> dict[str, Any]:
        sword = self.rng.choice(list(SWORDS))
        rarity, factor, _ = self.rng.choices(RARITY, weights=[w for *_, w in RARITY])[0]
        quantity = 1 if self.rng.random() < 0.9 else self.rng.randint(2, 3)
        price = round(SWORDS[sword] * factor * (1 + p.level / 20) * self.rng.uniform(0.9, 1.1), 2)
        return {
            "user_id": p.user_id,
            "sword_type": sword,
            "rarity": rarity,
            "price": price * quantity,
            "currency": "gold",
            "quantity": quantity,
        }

    def _level_up(self, p: Player) -> dict[str, Any]:
        p.level += 1
        gained = int(100 * p.level**1.5 * self.rng.uniform(0.8, 1.2))
        p.xp_total += gained
        played = self.clock - p.last_level_at
        p.last_level_at = self.clock
        return {
            "user_id": p.user_id,
            "level": p.level,
            "character_class": p.character_class,
            "xp_total": p.xp_total,
            "play_seconds": round(played, 1),
        }

    def _join_guild(self, p: Player) -> dict[str, Any]:
        p.guild = self.rng.choice(GUILDS)
        p.joined_at = self.clock
        role = "officer" if self.rng.random() < 0.1 else "member"
        return {"user_id": p.user_id, "guild_id": p.guild[0], "guild_name": p.guild[1], "role": role}

    def _leave_guild(self, p: Player) -> dict[str, Any]:
        assert p.guild is not None
        (gid, name), p.guild = p.guild, None
        reason = self.rng.choices([r for r, _ in LEAVE_REASONS], weights=[w for _, w in LEAVE_REASONS])[0]
        return {
            "user_id": p.user_id,
            "guild_id": gid,
            "guild_name": name,
            "reason": reason,
            "days_in_guild": int((self.clock - p.joined_at) // DAY_S),
        }


def _generic(et: EventType, p: Player, rng: random.Random) -> tuple[str, dict[str, Any]]:
    """An event of a type the game does not model: each field gets a value of its type."""
    values = {
        "string": lambda: f"v{rng.randint(1, 99)}",
        "long": lambda: rng.randint(0, 1000),
        "double": lambda: round(rng.uniform(0, 100), 2),
        "boolean": lambda: rng.random() < 0.5,
        "timestamp": lambda: time.strftime("%Y-%m-%dT%H:%M:%S+00:00", time.gmtime()),
    }
    fields: dict[str, Any] = {"user_id": p.user_id}
    for f in et.fields:
        if f.required or rng.random() < 0.8:
            fields[f.name] = values[f.type]()
    return et.name, fields


def spoil(event_type: str, fields: dict[str, Any], et: EventType | None, rng: random.Random) -> dict[str, Any]:
    """The event made wrong for its schema in one way the router reports (it becomes a dead letter)."""
    bad = dict(fields)
    typed = [f for f in (et.fields if et else ()) if f.type in ("long", "double", "boolean")]
    required = [f for f in (et.fields if et else ()) if f.required]
    choice = rng.random()
    if required and choice < 0.34:
        del_name = rng.choice(required).name
        bad.pop(del_name, None)
    elif typed and choice < 0.67:
        bad[rng.choice(typed).name] = "a lot"
    else:
        bad["cheat_code"] = "IDDQD"
    return bad


@dataclass
class LoadResult:
    run: str
    sent: Counter = field(default_factory=Counter)  # by event type
    bad_sent: Counter = field(default_factory=Counter)
    accepted: Counter = field(default_factory=Counter)  # by event type (bad ones included)
    refused: Counter = field(default_factory=Counter)
    dropped: int = 0
    lost: int = 0
    elapsed_s: float = 0.0
    kind: dict[str, tuple[str, bool]] = field(default_factory=dict)  # event_id -> (type, bad)
    accepted_ids: set[str] = field(default_factory=set)

    @property
    def total_sent(self) -> int:
        return sum(self.sent.values())

    def summary(self) -> str:
        types = sorted(set(self.sent) | set(self.accepted) | set(self.refused))
        rate = self.total_sent / self.elapsed_s if self.elapsed_s else 0.0
        lines = [
            f"questlog load {self.run}: {self.total_sent:,} events in {self.elapsed_s:.1f} s "
            f"({rate:,.0f}/s); {sum(self.accepted.values()):,} accepted, {sum(self.refused.values()):,} "
            f"refused, {self.dropped:,} dropped (queue full), {self.lost:,} unsent at the end",
            f"{'event type':<16}{'sent':>10}{'bad':>8}{'accepted':>10}{'refused':>9}",
        ]
        for t in types:
            lines.append(
                f"{t:<16}{self.sent[t]:>10,}{self.bad_sent[t]:>8,}{self.accepted[t]:>10,}{self.refused[t]:>9,}"
            )
        return "\n".join(lines)


def run_load(
    url: str,
    catalog: Catalog,
    *,
    write_key: str | None = None,
    players: int = 100,
    rate: float = 200.0,
    duration_s: float | None = None,
    count: int | None = None,
    bad_share: float = 0.0,
    seed: int | None = None,
    spool_dir: str | None = None,
    on_progress: Callable[[LoadResult, float], None] | None = None,
    close_timeout_s: float = 60.0,
    **tracker_options: Any,
) -> LoadResult:
    """Send the game's events at ``rate`` per second (0: as fast as the tracker takes them) for
    ``duration_s`` seconds or ``count`` events, whichever comes first; returns what happened."""
    if duration_s is None and count is None:
        raise ValueError("give a duration or a count")
    rng = random.Random(seed)
    result = LoadResult(run=f"load-{uuid.uuid4().hex[:10]}")
    game = Game(catalog, players, rng)
    # Game time ends about now: the run's events (as many as count, or rate x duration) are spread
    # over the hours before it, at most MAX_HISTORY_S (then players act more often).
    expected = count if count is not None else (rate if rate > 0 else 5000.0) * (duration_s or 0.0)
    span_s = expected * game.mean_gap_s / game.target_online
    if span_s > MAX_HISTORY_S:
        game.mean_gap_s *= MAX_HISTORY_S / span_s
        span_s = MAX_HISTORY_S
    origin = time.time() - span_s
    lock = threading.Lock()

    def accepted(ids: list[str], types: Counter) -> None:
        with lock:
            result.accepted_ids.update(ids)
            result.accepted.update(types)

    def refused(events: list[dict], status: int, reason: str) -> None:
        with lock:
            result.refused.update(e.get("event_type") for e in events)

    tracker = Tracker(
        url,
        write_key,
        catalog=catalog,
        id_prefix=result.run,
        spool_dir=spool_dir,
        on_accepted=accepted,
        on_refused=refused,
        **tracker_options,
    )
    started = time.monotonic()
    end = started + duration_s if duration_s is not None else float("inf")
    limit = count if count is not None else sys.maxsize
    n = 0
    last_progress = 0.0
    try:
        while n < limit:
            now = time.monotonic()
            if now >= end:
                break
            due = limit if rate <= 0 else min(limit, int((now - started) * rate) + 1)
            if n >= due:
                time.sleep(min(0.01, max(0.0005, (n + 1) / rate - (now - started))))
            while n < due:
                event_type, fields = game.next_event()
                fields["client_ts"] = min(origin + game.clock, time.time())
                bad = bad_share > 0 and rng.random() < bad_share
                if bad:
                    fields = spoil(event_type, fields, catalog.get(event_type), rng)
                    event_id = tracker.track_event({"event_type": event_type, **fields}, check=False)
                    result.bad_sent[event_type] += 1
                else:
                    event_id = tracker.track_event({"event_type": event_type, **fields})
                result.kind[event_id] = (event_type, bad)
                result.sent[event_type] += 1
                n += 1
                if rate <= 0 and n % 1000 == 0:
                    break
            if on_progress and now - last_progress >= 0.2:
                last_progress = now
                on_progress(result, now - started)
        result.elapsed_s = time.monotonic() - started
        tracker.close(close_timeout_s)
    finally:
        tracker.close(0)
    result.dropped = tracker.stats.dropped
    result.lost = tracker.stats.lost if spool_dir is None else tracker.queued
    if on_progress:
        on_progress(result, result.elapsed_s)
    return result


@dataclass
class Verdict:
    ok: bool
    expected: int
    landed: int
    missing: list[str]
    duplicates: dict[str, int]
    misplaced: list[str]  # in a table other than the one expected
    stray: int  # rows of this run's events the client was never told were accepted
    by_table: Counter

    def report(self) -> str:
        head = "verify: OK" if self.ok else "verify: FAILED"
        lines = [
            f"{head}: {self.landed:,} of {self.expected:,} accepted events in Trino, "
            f"{len(self.missing):,} missing, {len(self.duplicates):,} landed more than once, "
            f"{len(self.misplaced):,} in the wrong table, {self.stray:,} rows of events not reported accepted"
        ]
        lines += [f"  {table}: {n:,} rows" for table, n in sorted(self.by_table.items())]
        if self.missing:
            lines.append(f"  missing, e.g.: {', '.join(sorted(self.missing)[:5])}")
        if self.duplicates:
            lines.append(f"  twice or more, e.g.: {', '.join(sorted(self.duplicates)[:5])}")
        if self.misplaced:
            lines.append(f"  misplaced, e.g.: {', '.join(sorted(self.misplaced)[:5])}")
        return "\n".join(lines)


def landed(settings, catalog: Catalog, run: str) -> dict[str, Counter]:
    """table -> Counter(event_id -> rows) of this run's events, in every table and the dead letters."""
    from questlog.sql import execute

    found: dict[str, Counter] = {}
    for table in [et.table for et in catalog] + [DEAD_LETTER_TABLE]:
        _, rows = execute(
            settings, f'SELECT event_id, count(*) FROM "{table}" WHERE event_id LIKE ? GROUP BY event_id', [f"{run}-%"]
        )
        found[table] = Counter({event_id: n for event_id, n in rows})
    return found


def verify(
    settings,
    catalog: Catalog,
    result: LoadResult,
    timeout_s: float = 300.0,
    settle: Callable[[], None] | None = None,
    say: Callable[[str], None] = lambda _: None,
) -> Verdict:
    """Wait (up to ``timeout_s``) until every accepted event of ``result`` is in Trino, then let
    the pipeline settle (``settle``: an event sent now has landed, so a late duplicate would have
    too) and count: each accepted good event once in its type's table, each accepted bad one once
    in the dead letters, nothing anywhere else."""
    expected: dict[str, str] = {}  # event_id -> table
    for event_id in result.accepted_ids:
        if event_id not in result.kind:  # an earlier run's event, re-sent from the spool
            continue
        event_type, bad = result.kind[event_id]
        et = catalog.get(event_type)
        expected[event_id] = DEAD_LETTER_TABLE if bad or et is None else et.table
    deadline = time.monotonic() + timeout_s
    while True:
        found = landed(settings, catalog, result.run)
        present = {e for table, counts in found.items() for e in counts}
        missing = [e for e in expected if e not in present]
        say(f"verify: {len(expected) - len(missing):,} of {len(expected):,} accepted events in Trino")
        if not missing or time.monotonic() >= deadline:
            break
        time.sleep(3)
    if settle is not None and not missing:
        settle()
        found = landed(settings, catalog, result.run)
    rows: Counter = Counter()
    by_table: Counter = Counter()
    misplaced: list[str] = []
    stray = 0
    for table, counts in found.items():
        by_table[table] = sum(counts.values())
        for event_id, n in counts.items():
            rows[event_id] += n
            if event_id not in expected:
                stray += n
            elif expected[event_id] != table:
                misplaced.append(event_id)
    missing = [e for e in expected if rows[e] == 0]
    duplicates = {e: rows[e] for e in expected if rows[e] > 1}
    landed_n = sum(1 for e in expected if rows[e] > 0)
    ok = not missing and not duplicates and not misplaced
    return Verdict(ok, len(expected), landed_n, missing, duplicates, misplaced, stray, by_table)


def settle_marker(
    settings, catalog: Catalog, write_key: str | None = None, timeout_s: float = 120.0
) -> Callable[[], None]:
    """A ``settle`` for :func:`verify`: send one `default` event and wait until it is queryable
    (the router routes in order and the sink plans each batch over every topic's latest offsets,
    so whatever was sent before it has landed too)."""
    from questlog.sql import execute

    def settle() -> None:
        table = catalog.types["default"].table
        with Tracker(settings.collector_url, write_key, catalog=catalog, flush_interval_s=0.05) as t:
            marker = t.track("default")
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if execute(settings, f'SELECT count(*) FROM "{table}" WHERE event_id = ?', [marker])[1][0][0]:
                return
            time.sleep(1)

    return settle
