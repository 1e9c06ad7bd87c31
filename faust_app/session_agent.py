"""Agent ``sessions``: the activity records the router writes -> players' open sessions in the
Faust table ``sessions`` (changelog-backed) -> each closed session to ``events.sessions``, which the
sink lands as table ``sessions``. The decisions are ``faust_app.sessions.Sessionizer``'s.

The order that keeps every session exactly once: per batch, (1) decide (entries change in
memory), (2) send the closed sessions and await Kafka's confirmation, (3) write the changed entries
to the table and await Kafka's confirmation of their changelog records, (4) ack the batch in offset
order.

The table is written as Faust's ``table[key] = value`` does it (the changelog record, then the
store), but a batch's changelog records go out at once through the producer, like the router's
copies (``write``): ``table[key] = value`` hands each record to Faust's producer buffer, and while
more than 100 wait there Faust's conductor holds back every stream of the worker, the router's raw
topic included, and drains them one by one (1,826 "producer buffer full" stalls in one 30 s drain
of the router case: agent ``sessions``' 5,000 players' entries every 5 s).

A crash anywhere re-delivers from the last commit onto table state at least as new as that commit:
players whose entry holds the record's offset skip it, sessions closed again are the same sessions
with the same ids, and the sink drops the copy. A rebalance (Faust seeks back to the committed
offsets) drops what is in memory and reads the table again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import time
from collections.abc import Callable, Mapping

import mode
import prometheus_client as prom

from faust_app.router import backoff_s, cause
from faust_app.sessions import OUTCOMES, ActivityFeed, Sessionizer, partition_of
from faust_app.topics import Topics
from questlog.privacy import Suppressions
from questlog.settings import Settings

log = logging.getLogger(__name__)

SESSION_EVENTS = prom.Counter(
    "questlog_sessions_events_total",
    "Events the sessions agent took, by outcome (in_time, late_joined, late_new_session, late_dropped, "
    "duplicate, replayed, suppressed: faust_app.sessions).",
    ["outcome"],
)
SESSIONS_CLOSED = prom.Counter("questlog_sessions_closed_total", "Sessions closed and written to the sessions topic.")
SESSIONS_CLOSED_BY_CLOCK = prom.Counter(
    "questlog_sessions_closed_by_clock_total", "Of them, closed by the clock on an idle partition."
)
OPEN_PLAYERS = prom.Gauge("questlog_sessions_open_players", "Players with an open session on this worker.")
WITHOUT_PLAYER = prom.Counter(
    "questlog_sessions_events_without_player_total", "Routed events without a user_id (in no session)."
)
for _outcome in OUTCOMES:
    SESSION_EVENTS.labels(_outcome)

# A batch: what came within this long (or this many activity records: a router writes a few per
# chunk it routes, so the time decides). A changed entry is written to the table (its changelog)
# once a batch: each write costs the router's process ~50 us, so with thousands of active players
# a batch every 0.5 s cost half the router's events/s in make bench. Faust waits for a batch's acks
# before a rebalance, so at most this long.
TAKE_MAX = 2000
TAKE_WITHIN_S = 5.0


def add_sessions_agent(app, topics: Topics, settings: Settings, suppressions: Suppressions | None = None) -> None:
    """Register table ``sessions``, agent ``sessions`` over the activity topic and the router's
    idle ticks on ``app``. A closed session of a player forgotten meanwhile (``suppressions``, the
    router's) is not written."""
    table = app.Table(
        "sessions",
        default=None,
        partitions=settings.topic_partitions,
        key_type=bytes,
        value_type=bytes,
        # the changelog partition of a key is Kafka's murmur2 of it, as the router's activity's
        use_partitioner=True,
        help="Each player's open sessions, recent event ids and last closed session's end.",
    )
    activity = topics.activity
    ticks = ActivityFeed(settings.topic_partitions)
    # Faust's assignments to this worker so far: the agent reads the table again after each one.
    assignments = [0]

    @app.on_partitions_assigned.connect
    async def on_assigned(sender, assigned, **kwargs) -> None:
        assignments[0] += 1

    @app.agent(activity, name="sessions", concurrency=1, supervisor_strategy=mode.CrashingSupervisor)
    async def sessions(stream):
        core = Sessionizer(
            settings.session_gap_s,
            settings.session_lateness_s,
            settings.session_tick_s,
            settings.session_client_ts_max_age_s,
        )
        producer = app.producer
        rebuilt_for = -1  # the assignment the entries in memory were read for
        # the assignment and the suppression list (its sets, replaced on each reload) that this
        # worker's table was last purged of forgotten players for
        purged_for: tuple = (-1, frozenset(), frozenset())
        async for events in stream.noack_take(TAKE_MAX, within=TAKE_WITHIN_S):
            if rebuilt_for != assignments[0]:
                # After every rebalance, not only when this worker's partitions differ from the last
                # batch's: a partition may have gone to another worker and come back between two
                # batches (no batch comes while a worker holds no partition), and the entries in
                # memory are then older than the table the other worker left.
                rebuilt_for = assignments[0]
                now_assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.activity_topic}
                players = core.rebuild(table.items(), now_assigned)
                log.info("sessions: partitions %s, %d players with an open session", sorted(now_assigned), players)
            drop = None
            if suppressions is not None:
                suppressions.refresh()
                now = (assignments[0], suppressions.any_source, suppressions.by_source)
                if now[0] != purged_for[0]:  # partitions may have come: every request counts
                    new_any, new_by = now[1], now[2]
                else:  # only the requests added since (the list reloads at each step of each request)
                    new_any = now[1] - purged_for[1] if now[1] is not purged_for[1] else frozenset()
                    new_by = now[2] - purged_for[2] if now[2] is not purged_for[2] else frozenset()
                if new_any or new_by:
                    assigned = {tp.partition for tp in app.consumer.assignment() if tp.topic == settings.activity_topic}
                    match = requested(suppressions.hasher, new_any, new_by)
                    gone = forgotten_players(match, table.keys(), assigned, settings.topic_partitions)
                    # a tombstone in the changelog for each: compaction then drops the entry
                    await write(producer, table, dict.fromkeys(gone), settings.topic_partitions)
                    core.forget(gone)
                    if gone:
                        log.info("sessions: %d forgotten players' entries deleted", len(gone))
                purged_for = now
                if len(suppressions):
                    drop = lambda source, user: suppressions.matches({"source": source, "user_id": user})  # noqa: E731
            out = core.apply(
                ((e.message.partition, e.message.offset, e.value) for e in events), table.get, table.items, drop
            )
            closed = out.sessions
            if suppressions is not None:
                closed = [rec for rec in closed if not forgotten(suppressions, rec)]
            await deliver(producer, settings.sessions_topic, closed)
            await write(producer, table, core.checkpoint(), settings.topic_partitions)
            for outcome, n in out.counts.items():
                SESSION_EVENTS.labels(outcome).inc(n)
            SESSIONS_CLOSED.inc(len(out.sessions))
            SESSIONS_CLOSED_BY_CLOCK.inc(out.closed_by_clock)
            OPEN_PLAYERS.set(core.open_players)
            for event in events:
                event.ack()

    @app.timer(interval=settings.session_tick_s)
    async def tick() -> None:
        """A tick into every activity partition: the agent closes an idle partition's sessions
        by the clock."""
        records = ticks.ticks(round(time.time() * 1000))
        await deliver(app.producer, settings.activity_topic, [(p, None, v) for p, v in records])


async def write(producer, table, entries: Mapping[bytes, bytes | None], partitions: int) -> None:
    """Write ``entries`` to the Faust table ``table`` (None: delete the key) as ``table[key] =
    value`` and ``del table[key]`` do, the changelog record then the store, with every changelog
    record sent at once and confirmed by Kafka before this returns. Each goes to the partition
    Faust's partitioner gives its key (the table has ``use_partitioner=True``)."""
    if not entries:
        return
    changelog = table.changelog_topic.get_topic_name()
    await deliver(producer, changelog, [(partition_of(key, partitions), key, value) for key, value in entries.items()])
    store = table.data
    for key, value in entries.items():
        if value is None:
            store.pop(key, None)
        else:
            store[key] = value


def requested(hasher, any_source: frozenset, by_source: frozenset) -> Callable[[str | None, str], bool]:
    """Whether a player (source, user_id) is one of these forget requests' (as
    ``Suppressions.matches``: hashes of every source, and (source, hash) pairs)."""

    def match(source: str | None, user: str) -> bool:
        h = hasher.player(user)
        return h in any_source or (bool(by_source) and (source or "default", h) in by_source)

    return match


def forgotten_players(match: Callable[[str | None, str], bool], keys, partitions: set[int], count: int) -> list[bytes]:
    """The table's keys (``source/user_id``) in ``partitions`` (of ``count``) of players for whom
    ``match(source, user_id)`` holds."""
    gone = []
    for key in list(keys):
        source, _, user = key.decode().partition("/")
        if match(source or None, user) and partition_of(key, count) in partitions:
            gone.append(key)
    return gone


def forgotten(suppressions: Suppressions, record) -> bool:
    """Whether a closed session's record (key, value) is a forgotten player's."""
    if not len(suppressions):
        return False
    value = record[-1]
    try:
        session = json.loads(value)
    except (TypeError, ValueError):
        return False
    return suppressions.matches(session)


async def deliver(producer, topic: str, records) -> None:
    """Send ``records`` ((key, value), or (partition, key, value)) and return once Kafka confirmed
    all; failures are retried with backoff, never given up (the batch stays unacked meanwhile)."""
    attempt = 0
    pending = list(records)
    while pending:
        futures = []
        for rec in pending:
            partition, key, value = rec if len(rec) == 3 else (None, *rec)
            futures.append(await producer.send(topic, key, value, partition, None, None))
        results = await asyncio.gather(*futures, return_exceptions=True)
        failed = [rec for rec, r in zip(pending, results, strict=True) if isinstance(r, BaseException)]
        if failed:
            attempt += 1
            error = next(r for r in results if isinstance(r, BaseException))
            wait = backoff_s(attempt)
            log.warning(
                "Kafka did not confirm %d records to %s (%r); retrying in %.1fs", len(failed), topic, cause(error), wait
            )
            await asyncio.sleep(wait)
        pending = failed
