"""Player sessions: pure decisions, for the router's side (``ActivityFeed``) and for agent
``sessions`` (``Sessionizer``; the agent itself is in ``faust_app.session_agent``).

A player is (``source``, ``user_id``); events without a ``user_id`` belong to no session. The raw
topic is not keyed by player (a record is a request, maybe of several players), so the router,
for every chunk it routes, writes one compact *activity* record per partition of the activity
topic (``Settings.activity_topic``), listing the valid events of the players that hash to that
partition: Kafka's murmur2 of the player key, the partitioner Faust's producer uses for the
sessions table's changelog (``use_partitioner=True``), so the table's keys and the activity are
co-partitioned. The router awaits these records with the typed copies, before it acks.

The rules (README "Player sessions" says them to users):
- Event time: ``client_ts`` when it is present and not after ``received_at`` nor more than
  QUESTLOG_SESSION_CLIENT_TS_MAX_AGE_S before it; else ``received_at``. A replayed backlog keeps
  its timestamps, so it sessionises as it did live.
- A session is a player's events with no gap of more than QUESTLOG_SESSION_GAP_S between two
  of them (event time). Events may come in any order: an event within the gap of two open
  sessions joins them into one.
- Each activity partition has a watermark: the latest event time seen on it minus
  QUESTLOG_SESSION_LATENESS_S. A session closes (is emitted, then forgotten but for its end) when
  the watermark passes its end + gap. An idle partition (no events for QUESTLOG_SESSION_TICK_S,
  as the router's ticks tell) closes by the clock instead: now - lateness. During a replay the
  partition is busy, so the clock never closes a backlog's sessions early.
- Late events (before the watermark when they come) still join an open session within the gap
  (``late_joined``), or open a session of their own (``late_new_session``); one at or before the
  end of the player's last closed session is dropped (``late_dropped``): it cannot be told from a
  replay of that session. Each is counted (``questlog_sessions_events_total`` by outcome).
- A forgotten player (``questlog forget``): their entry leaves the table (a tombstone in its
  changelog, which compaction then drops), and their events still in the activity topic are
  dropped (``suppressed``), so no entry of theirs is made again.
- Exactly once: an activity record re-delivered to the agent (a crash before Faust committed) is
  skipped for each player whose table entry already holds its offset (``replayed``); an event the
  router routed twice (a crash of the router before its commit) is recognised by its id among the
  player's last ``RECENT_IDS`` (``duplicate``); a session has a deterministic id (player and first
  event id), so one emitted twice is dropped by the sink's dedupe.
"""

from __future__ import annotations

import hashlib
import heapq
import math
import time
import zlib
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka.partitioner import murmur2

from questlog.catalog import event_key

# Event ids a player's table entry remembers, to drop the router's re-deliveries (a crash of the
# router re-routes what it had not committed: about a second of traffic).
RECENT_IDS = 64
# Events in one activity record at most (an event takes ~120 bytes; records stay far below 1 MB).
ACTIVITY_MAX_EVENTS = 2000
# Player keys whose partition is remembered by the router (then the memo starts again).
PARTITION_MEMO = 100_000

OUTCOMES = ("in_time", "late_joined", "late_new_session", "late_dropped", "duplicate", "replayed", "suppressed")


def player_key(source: str | None, user_id: str) -> bytes:
    """The sessions table's key: ``source/user_id`` (a source has no ``/``)."""
    return f"{source or ''}/{user_id}".encode()


def partition_of(key: bytes, partitions: int) -> int:
    """The partition Kafka's default partitioner (aiokafka's, Faust's producer's) gives ``key``."""
    return (murmur2(key) & 0x7FFFFFFF) % partitions


def to_ms(timestamp: str) -> int:
    return round(datetime.fromisoformat(timestamp).timestamp() * 1000)


def iso(ms: int) -> str:
    return datetime.fromtimestamp(ms / 1000, UTC).isoformat(timespec="milliseconds")


def event_time_ms(received_at: str, client_ts: str | None, max_age_ms: int) -> int:
    """The event's time: ``client_ts`` if present, not after ``received_at`` and not more than
    ``max_age_ms`` before it; else ``received_at``."""
    received = to_ms(received_at)
    if client_ts:
        try:
            client = to_ms(client_ts)
        except ValueError:
            return received
        if received - max_age_ms <= client <= received:
            return client
    return received


class ActivityFeed:
    """The router's side: the activity records of a chunk's valid events, and the idle ticks."""

    def __init__(self, partitions: int) -> None:
        self.partitions = partitions
        self._memo: dict[bytes, int] = {}
        self.without_player = 0  # events of no player (no user_id), since the start

    def records(self, events: Iterable[dict[str, Any]]) -> list[tuple[int, bytes]]:
        """(partition, value) of the activity records for these (validated) events."""
        memo = self._memo
        per: dict[int, list] = {}
        for ev in events:
            user = ev.get("user_id")
            if not user:
                self.without_player += 1
                continue
            source = ev.get("source")
            key = player_key(source, user)
            p = memo.get(key)
            if p is None:
                if len(memo) >= PARTITION_MEMO:
                    memo.clear()
                p = memo[key] = partition_of(key, self.partitions)
            per.setdefault(p, []).append(
                (source, user, ev["received_at"], ev.get("client_ts"), ev["event_type"], ev["event_id"])
            )
        out = []
        for p, listed in per.items():
            for i in range(0, len(listed), ACTIVITY_MAX_EVENTS):
                out.append((p, orjson.dumps({"e": listed[i : i + ACTIVITY_MAX_EVENTS]})))
        return out

    def ticks(self, now_ms: int) -> list[tuple[int, bytes]]:
        """One tick per partition: the router's clock, for partitions without events."""
        value = orjson.dumps({"tick": now_ms})
        return [(p, value) for p in range(self.partitions)]


def _to_ms_or_none(timestamp: str) -> int | None:
    try:
        return to_ms(timestamp)
    except ValueError:
        return None


def _load(raw: bytes | None, partition: int) -> tuple[dict, int]:
    """A player's table entry as the sessionizer works on it (recent ids as an ordered set), with
    the activity offset it holds; a new one if ``raw`` is None."""
    if raw is None:
        return {"p": partition, "o": -1, "s": [], "r": {}, "c": None}, -1
    st = orjson.loads(raw)
    st["r"] = dict.fromkeys(st["r"])
    return st, st["o"]


def _dump(st: dict) -> bytes:
    recent = list(st["r"])
    return orjson.dumps({**st, "r": recent[-RECENT_IDS:] if len(recent) > RECENT_IDS else recent})


def digest(event_id: str) -> int:
    """64 bits of an event id (CRC-32 and Adler-32: stable across processes, cheap)."""
    b = event_id.encode()
    return zlib.crc32(b) << 32 | zlib.adler32(b)


def session_id(source: str | None, user_id: str, first_event_id: str) -> str:
    return hashlib.blake2b(f"{source or ''}/{user_id}/{first_event_id}".encode(), digest_size=16).hexdigest()


# A session in a player's table entry: [start ms, end ms, first event id, last event id,
# {event type: count}, late events].
Session = list


def merge(a: Session, b: Session) -> Session:
    """One session of two that touch: first and last events by time, ties broken by event id."""
    start, first = min((a[0], a[2]), (b[0], b[2]))
    end, last = max((a[1], a[3]), (b[1], b[3]))
    counts = dict(a[4])
    for k, n in b[4].items():
        counts[k] = counts.get(k, 0) + n
    return [start, end, first, last, counts, a[5] + b[5]]


@dataclass
class Outcome:
    """What one batch of activity records decided: session records to send (key, value), counts
    by outcome; ``reset``: the batch went back before what was applied (Faust re-delivers from
    its last commit after a rebalance), so the entries in memory were dropped and read again."""

    sessions: list[tuple[bytes, bytes]] = field(default_factory=list)
    counts: Counter = field(default_factory=Counter)
    closed_by_clock: int = 0
    reset: bool = False


class Sessionizer:
    """Agent ``sessions``' decisions. The table's entries are read through ``get`` (the Faust
    table) and then kept in memory, changed in place; ``checkpoint`` gives the changed ones to
    write (the agent writes them, then acks what it applied). Also in memory (rebuilt from the
    table after a start, a rebalance or a re-delivery): each partition's watermark and a heap of
    when its players' sessions may close."""

    def __init__(
        self,
        gap_s: float,
        lateness_s: float,
        tick_s: float,
        client_ts_max_age_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.gap = int(gap_s * 1000)
        self.lateness = int(lateness_s * 1000)
        self.tick = tick_s
        self.max_age = int(client_ts_max_age_s * 1000)
        self.clock = clock
        self.watermark: dict[int, float] = {}
        self._heaps: dict[int, list[tuple[int, bytes]]] = {}
        self._due: dict[bytes, int] = {}  # each player's latest heap entry
        self._last_events: dict[int, float] = {}  # per partition, the clock when events last came
        self._started = clock()
        self._cache: dict[bytes, tuple[dict, int]] = {}  # key -> (entry, the offset the table has in it)
        self._dirty: set[bytes] = set()  # changed since the last checkpoint
        self._next: dict[int, int] = {}  # per partition, the offset after the last applied
        self._partitions: set[int] | None = None

    # -- the in-memory index ----------------------------------------------------------------
    def rebuild(self, entries: Iterable[tuple[bytes, bytes]], partitions: set[int] | None) -> int:
        """Forget what is in memory and index the open sessions of ``partitions`` (None: all) from
        the table's entries; returns how many players have one."""
        self._partitions = partitions
        self._heaps = {p: [] for p in partitions or ()}
        self._due = {}
        self._cache = {}
        self._dirty = set()
        self._next = {}
        if partitions is not None:
            self.watermark = {p: w for p, w in self.watermark.items() if p in partitions}
        for key, value in entries:
            if value is None:
                continue
            st = orjson.loads(value)
            if (partitions is None or st["p"] in partitions) and st["s"]:
                self._schedule(key, st)
        for heap in self._heaps.values():
            heapq.heapify(heap)
        return len(self._due)

    def _schedule(self, key: bytes, st: dict) -> None:
        due = min(s[1] for s in st["s"]) + self.gap
        if self._due.get(key) != due:
            self._due[key] = due
            heapq.heappush(self._heaps.setdefault(st["p"], []), (due, key))

    @property
    def open_players(self) -> int:
        return len(self._due)

    def forget(self, keys: Iterable[bytes]) -> None:
        """Drop these players from memory (their entries left the table): no session of theirs is
        closed, no entry of theirs written."""
        for key in keys:
            self._cache.pop(key, None)
            self._dirty.discard(key)
            self._due.pop(key, None)  # their heap entries no longer match: skipped when popped

    # -- a batch ----------------------------------------------------------------------------
    def checkpoint(self) -> dict[bytes, bytes]:
        """The entries changed since the last checkpoint, to write to the table; players without
        an open session leave the memory (the table has them)."""
        writes = {}
        for key in self._dirty:
            st = self._cache[key][0]
            writes[key] = _dump(st)
            if not st["s"]:
                del self._cache[key]
        self._dirty = set()
        return writes

    def apply(
        self,
        batch: Iterable[tuple[int, int, bytes]],
        get: Callable[[bytes], bytes | None],
        entries: Callable[[], Iterable[tuple[bytes, bytes]]] = tuple,
        drop: Callable[[str | None, str], bool] | None = None,
    ) -> Outcome:
        """Apply a batch of activity records (partition, offset, value), in offset order per
        partition; close what the watermarks (or the clock, on idle partitions) allow. A batch
        that goes back before what was applied first rebuilds from the table (``entries``). Events
        of a player for whom ``drop(source, user_id)`` holds (forgotten) are counted and skipped."""
        out = Outcome()
        batch = list(batch)
        if any(offset < self._next.get(partition, -1) for partition, offset, _ in batch):
            self.rebuild(entries(), self._partitions)
            out.reset = True
        now = self.clock()
        states = self._cache
        dirty = self._dirty
        touched: set[bytes] = set()
        ticks: dict[int, int] = {}
        seen: set[int] = set()
        times: dict[str, int | None] = {}  # timestamp -> ms, for this batch (a request's events share them)
        keys: dict[tuple[str | None, str], bytes | None] = {}  # None: a dropped player's
        max_age = self.max_age
        for partition, offset, value in batch:
            self._next[partition] = offset + 1
            rec = orjson.loads(value)
            if "tick" in rec:
                ticks[partition] = max(ticks.get(partition, 0), rec["tick"])
                continue
            seen.add(partition)
            self._last_events[partition] = now
            wm = self.watermark.get(partition, -math.inf)
            top = wm
            for source, user, received_at, client_ts, event_type, event_id in rec["e"]:
                # event_time_ms, with each timestamp parsed once a batch
                t = times.get(received_at)
                if t is None:
                    t = times[received_at] = to_ms(received_at)
                if client_ts:
                    c = times.get(client_ts, -1)
                    if c == -1:
                        c = times[client_ts] = _to_ms_or_none(client_ts)
                    if c is not None and t - max_age <= c <= t:
                        t = c
                key = keys.get((source, user), b"")
                if key == b"":
                    key = keys[(source, user)] = None if drop and drop(source, user) else player_key(source, user)
                if key is None:
                    out.counts["suppressed"] += 1
                    if t > top:  # the watermark as if they had not been forgotten: a replay closes alike
                        top = t
                    continue
                loaded = states.get(key)
                if loaded is None:
                    loaded = states[key] = _load(get(key), partition)
                st, persisted = loaded
                if persisted >= offset:
                    out.counts["replayed"] += 1
                else:
                    out.counts[self._add(st, t, event_type, event_id, t < wm)] += 1
                    if offset > st["o"]:
                        st["o"] = offset
                    touched.add(key)
                if t > top:
                    top = t
            self.watermark[partition] = max(wm, top - self.lateness)
        dirty |= touched
        for key in touched:
            st = states[key][0]
            if st["s"]:
                self._schedule(key, st)
        for partition in seen | set(ticks):
            threshold = self.watermark.get(partition, -math.inf)
            tick = ticks.get(partition)
            idle = tick is not None and now - self._last_events.get(partition, self._started) >= self.tick
            if tick is not None and idle:
                threshold = max(threshold, tick - self.lateness)
            heap = self._heaps.setdefault(partition, [])
            while heap and heap[0][0] <= threshold:
                due, key = heapq.heappop(heap)
                if self._due.get(key) != due:
                    continue  # an older entry: the player's sessions moved on
                del self._due[key]
                loaded = states.get(key)
                if loaded is None:
                    raw = get(key)
                    if raw is None:
                        continue
                    loaded = states[key] = _load(raw, partition)
                st = loaded[0]
                keep = []
                for s in st["s"]:
                    if s[1] + self.gap <= threshold:
                        out.sessions.append(self._record(key, s, now))
                        st["c"] = s[1] if st["c"] is None else max(st["c"], s[1])
                        if idle and s[1] + self.gap > self.watermark.get(partition, -math.inf):
                            out.closed_by_clock += 1
                    else:
                        keep.append(s)
                st["s"] = keep
                dirty.add(key)
                if keep:
                    self._schedule(key, st)
        return out

    def _add(self, st: dict, t: int, event_type: str, event_id: str, late: bool) -> str:
        d = digest(event_id)
        recent: dict = st["r"]
        if d in recent:
            return "duplicate"
        if st["c"] is not None and t <= st["c"]:
            return "late_dropped"
        recent[d] = None
        if len(recent) >= 2 * RECENT_IDS:  # keep the last RECENT_IDS (to RECENT_IDS x 2 between cuts)
            st["r"] = dict.fromkeys(list(recent)[-RECENT_IDS:])
        gap = self.gap
        if len(st["s"]) == 1:  # the common case: one open session, which the event joins, in place
            s = st["s"][0]
            if s[0] - gap <= t <= s[1] + gap:
                if t < s[0] or (t == s[0] and event_id < s[2]):
                    s[0], s[2] = t, event_id
                if t > s[1] or (t == s[1] and event_id > s[3]):
                    s[1], s[3] = t, event_id
                counts = s[4]
                counts[event_type] = counts.get(event_type, 0) + 1
                if late:
                    s[5] += 1
                    return "late_joined"
                return "in_time"
        new: Session = [t, t, event_id, event_id, {event_type: 1}, 1 if late else 0]
        keep = []
        joined = False
        for s in st["s"]:
            if s[0] - gap <= t <= s[1] + gap:
                new = merge(new, s)
                joined = True
            else:
                keep.append(s)
        keep.append(new)
        keep.sort(key=lambda s: s[0])
        st["s"] = keep
        if not late:
            return "in_time"
        return "late_joined" if joined else "late_new_session"

    def _record(self, key: bytes, s: Session, now: float) -> tuple[bytes, bytes]:
        source, _, user = key.decode().partition("/")
        sid = session_id(source, user, s[2])
        value = {
            "source": source or None,
            "user_id": user,
            "session_id": sid,
            "session_start": iso(s[0]),
            "session_end": iso(s[1]),
            "duration_s": (s[1] - s[0]) / 1000,
            "events": sum(s[4].values()),
            "events_by_type": orjson.dumps(dict(sorted(s[4].items()))).decode(),
            "first_event_id": s[2],
            "last_event_id": s[3],
            "late_events": s[5],
            "closed_at": iso(round(now * 1000)),
        }
        return event_key(source or None, sid), orjson.dumps(value)
