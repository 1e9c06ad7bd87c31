"""Player sessions with two router workers on the real stack: a kill -9, under load, of the worker
that holds the partitions (the other takes them over, the sessions table with them). Scripted
players with known gaps give exactly the expected rows in Trino's `sessions` table: none lost,
none doubled.

The second worker is the documented command with its own web port, in the stack's consumer group
(QUESTLOG_ROUTER_ID). Which worker holds what is read from the group's description (the members'
assignments, matched to each worker by the member id it logs when it joins), as
tests/integration/test_router.py does for routing.

Sessions close by event time only: both workers run with QUIET_TICK_S, so no partition is
closed by the clock while a worker is down or the group rebalances (the scripted events are hours
old: the clock would close them at the first idle moment, and the split would say nothing about
the table). At the end one event per activity partition, hours later in event time, moves every
partition's watermark past the scripted sessions' ends, in stream order: after everything sent
before it. The stack's router (its usual settings) is back when a test ends.

Load: filler players post a request every 0.2 s during the scenario; their events are sessionised
too (one long session each, its events counted exactly). Their event times sit between the
scripted sessions so that no watermark closes a session early: see ``FILLER_AT``.
"""

from __future__ import annotations

import dataclasses
import os
import re
import signal
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from faust_app.sessions import partition_of, player_key
from ops.stack import services
from producer.envelope import DEFAULT_SOURCE
from questlog.kafka_admin import admin_client
from tests.e2e.test_sessions import events, post, sessions
from tests.helpers import query, wait_for

pytestmark = pytest.mark.e2e

SWORD = "purchase_sword"
PLAYERS = [f"p{k:02d}" for k in range(20)]
# Each scripted player: minutes 0-5 and 10-15 (one session, sent in pieces around the rebalance or
# the kill), then 60-62 (a second session, sent last).
MINUTES = [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 60, 61, 62]
# Filler events: from minute 33 on, 20 ms apart. With the default gap (30 min) and lateness
# (2 min): they never bring a partition's watermark (latest event time - 2 min) to 35 (when a
# scripted player's first 0-5 would close) nor to 45 (0-15); the minutes 60-62 bring it to 60,
# before which the filler sessions (ending after 33 + 30 = 63) do not close.
FILLER_AT = timedelta(minutes=33)
FILLER_STEP_MS = 20
FILLER_PLAYERS = [f"f{k:02d}" for k in range(20)]
# The workers' QUESTLOG_SESSION_TICK_S during a test: no partition closes by the clock meanwhile.
QUIET_TICK_S = 3600.0
# The closing events: this long after the scripted sessions (event time).
CLOSE_AT = timedelta(hours=3)


def expected_sessions(filler_events: int) -> list[tuple]:
    out = []
    for f in FILLER_PLAYERS:
        n = filler_events
        out.append((f, n, (n - 1) * FILLER_STEP_MS / 1000, f"{f}-00000", f"{f}-{n - 1:05d}", {SWORD: n}))
    for p in PLAYERS:
        out.append((p, 12, 900.0, f"{p}-000", f"{p}-011", {SWORD: 12}))
        out.append((p, 3, 120.0, f"{p}-012", f"{p}-014", {SWORD: 3}))
    return sorted(out, key=lambda row: row[0])  # by player (stable: each player's by start)


class Filler(threading.Thread):
    """One request every 0.2 s with the next event of each filler player, until stopped."""

    def __init__(self, settings, run: str, t0: datetime) -> None:
        super().__init__(daemon=True)
        self.settings, self.run_id, self.t0 = settings, run, t0
        self.sent = 0  # events per filler player the collector took
        self.retries = 0
        self.error: str | None = None
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.is_set():
            i = self.sent
            at = (self.t0 + FILLER_AT + timedelta(milliseconds=i * FILLER_STEP_MS)).isoformat(timespec="milliseconds")
            batch = [
                {
                    "event_id": f"{self.run_id}-{f}-{i:05d}",
                    "event_type": SWORD,
                    "user_id": f"{self.run_id}-{f}",
                    "client_ts": at,
                }
                for f in FILLER_PLAYERS
            ]
            if not self._send(batch):
                return
            self.sent += 1
            self._stop_event.wait(0.2)

    def _send(self, batch: list[dict]) -> bool:
        """Send until the collector takes it (a 503, or no answer: the same events again; taken
        twice, the copy is dropped by its ids), for up to 2 minutes."""
        deadline = time.monotonic() + 120
        while True:
            try:
                r = requests.post(f"{self.settings.collector_url}/events", json=batch, timeout=30)
                if r.status_code in (200, 201, 202):
                    return True
                self.error = f"{r.status_code} {r.text}"
                if r.status_code != 503:
                    return False
            except requests.RequestException as exc:
                self.error = repr(exc)
            if time.monotonic() > deadline:  # (not when stopped: the count must stay exact)
                return False
            time.sleep(1.0)
            self.retries += 1

    def halt(self) -> None:
        self._stop_event.set()
        if self.is_alive():
            self.join(60)

    def started(self) -> None:
        self.start()
        wait_for(lambda: self.sent >= 3 or not self.is_alive(), 60, 0.2, what="the filler's first requests")
        assert self.is_alive(), f"the collector did not take a filler request: {self.error}"

    def finish(self) -> int:
        alive = self.is_alive()
        self.halt()
        assert alive, f"the collector did not take a filler request: {self.error}"
        return self.sent


class Workers:
    """The stack's router ("router") and a second worker ("router-2") in its consumer group."""

    def __init__(self, pipeline) -> None:
        self.pipeline = pipeline
        self.s = pipeline.settings
        self.sup = pipeline.supervisor
        self.usual = services.router(self.s)
        quiet = self.s.replace(session_tick_s=QUIET_TICK_S)
        self.first = services.router(quiet)
        # the documented command, another web port (and so another Faust data directory)
        self.second = dataclasses.replace(
            services.router(quiet.replace(router_web_port=self.s.router_web_port + 3)),
            name="router-2",
            health=lambda: True,
        )

    def quiet(self) -> None:
        """The stack's router again, without closing sessions by the clock."""
        self.sup.stop("router", timeout_s=30)
        self.sup.start(self.first)
        wait_for(lambda: self.alone("router"), 120, 1, what="the router alone in its group")

    def member_id(self, name: str) -> str | None:
        """The member id the worker's latest process logged when it (last) joined the group."""
        text = self.sup.log_path(name).read_text(errors="replace")
        text = text[text.rfind("=== ") :]  # this process's lines (the supervisor marks each start)
        ids = re.findall(rf"Joined group '{re.escape(self.s.router_id)}' \(generation \d+\) with member_id (\S+)", text)
        return ids[-1] if ids else None

    def holdings(self) -> dict[str, dict[str, int]] | None:
        """Worker name -> {topic: partitions held}, when the group is STABLE and every member is one
        of the two workers' current processes; None otherwise (a rebalance under way)."""
        admin = admin_client(self.s.kafka_client())  # held: a dropped client never answers
        try:
            group = admin.describe_consumer_groups([self.s.router_id])[self.s.router_id].result(10)
        except Exception:  # the coordinator busy with a rebalance: ask again
            return None
        if group.state.name != "STABLE":
            return None
        names = {self.member_id(n): n for n in ("router", "router-2") if self.sup.running_pid(n) is not None}
        out = {}
        for m in group.members:
            if m.member_id not in names:
                return None  # a member not yet in the log, or one that is gone but not yet out
            held: dict[str, int] = {}
            for tp in m.assignment.topic_partitions:
                held[tp.topic] = held.get(tp.topic, 0) + 1
            out[names[m.member_id]] = held
        return out

    def raw_partitions(self) -> int:
        admin = admin_client(self.s.kafka_client())
        return len(admin.list_topics(self.s.raw_topic, timeout=10).topics[self.s.raw_topic].partitions)

    def both_in(self) -> dict | None:
        """Both workers in the group: the raw topic's partitions shared between them (each holding
        some when there are two or more), each holding partitions of the sessions table's changelog
        (active or standby)."""
        held = self.holdings()
        if held is None or set(held) != {"router", "router-2"}:
            return None
        raw = [h.get(self.s.raw_topic, 0) for h in held.values()]
        changelog = [h.get(self.s.sessions_changelog_topic, 0) for h in held.values()]
        n = self.raw_partitions()
        ok = sum(raw) == n and (min(raw) > 0 or n == 1) and min(changelog) > 0
        return held if ok else None

    def alone(self, name: str) -> dict | None:
        """``name`` the group's only member, holding every raw partition."""
        held = self.holdings()
        if held is None or set(held) != {name}:
            return None
        return held if held[name].get(self.s.raw_topic, 0) == self.raw_partitions() else None

    def raw_holder(self) -> str:
        held = wait_for(self.both_in, 120, 1, what="both workers in the router's group")
        (name,) = [n for n, h in held.items() if h.get(self.s.raw_topic)][:1]
        return name

    def restore(self) -> None:
        """Leave the stack as the other tests expect it: the stack's router, its usual settings."""
        self.sup.stop("router-2", timeout_s=30)
        self.sup.stop("router", timeout_s=30)
        self.sup.start(self.usual)
        self.sup.wait_healthy(self.usual)
        wait_for(lambda: self.alone("router"), 120, 1, what="the stack's router alone in its group")


def routed(settings, run: str, count: int) -> bool:
    """Whether ``count`` of this run's events have their typed copies in Trino (the router routed
    them, and wrote their activity before it acked them)."""
    rows = query(settings, f"SELECT count(DISTINCT event_id) FROM sword_purchases WHERE event_id LIKE '{run}-%'")
    return rows[0][0] >= count


class Script:
    """The scripted players' events in pieces, by index into MINUTES, in any order within a piece."""

    def __init__(self, settings, run: str, t0: datetime, filler: Filler) -> None:
        self.settings, self.run, self.t0, self.filler = settings, run, t0, filler
        self.all = {p: events(run, p, MINUTES, t0) for p in PLAYERS}
        self.sent: list[str] = []

    def send(self, lo: int, hi: int) -> None:
        batch = [e for p in PLAYERS for e in self.all[p][lo:hi]]
        batch.sort(key=lambda e: hash(e["event_id"]))
        post(self.settings, batch)
        self.sent += [e["event_id"] for e in batch]

    def wait_routed(self) -> None:
        """Until what was sent so far (the filler's requests too) is routed."""
        count = len(self.sent) + self.filler.sent * len(FILLER_PLAYERS)
        wait_for(lambda: routed(self.settings, self.run, count), 300, 2, what=f"{count} events routed")

    def close(self) -> None:
        """One event per activity partition, CLOSE_AT later (event time), of players outside the
        run's: each partition's watermark passes every session sent before (the run's are due at
        minute 92 at the latest)."""
        partitions = self.settings.topic_partitions
        users: dict[int, str] = {}
        k = 0
        while len(users) < partitions:
            user = f"c{self.run}-{k}"
            users.setdefault(partition_of(player_key(DEFAULT_SOURCE, user), partitions), user)
            k += 1
        at = (self.t0 + CLOSE_AT).isoformat(timespec="milliseconds")
        post(
            self.settings,
            [{"event_id": u, "event_type": SWORD, "user_id": u, "client_ts": at} for u in users.values()],
        )


def check(settings, run: str, script: Script, started: float) -> None:
    n = script.filler.finish()
    script.wait_routed()
    script.close()
    expected = expected_sessions(n)
    wait_for(lambda: len(sessions(settings, run)) >= len(expected), 300, 2, what="the sessions in Trino")
    time.sleep(2 * settings.sink_trigger_s + settings.session_tick_s)  # a double would land by now
    found = sessions(settings, run)
    print(
        f"\n{len(expected)} sessions expected ({len(PLAYERS)} players x 2, {len(FILLER_PLAYERS)} filler players "
        f"x 1 of {n} events, {script.filler.retries} filler requests sent again), {len(found)} found, "
        f"{time.monotonic() - started:.0f}s"
    )
    assert found == expected


def test_a_kill_9_of_the_worker_holding_the_partitions_loses_and_doubles_no_session(pipeline):
    """Two workers; the one holding the raw topic's and the table's partitions dies mid-stream
    without a word (kill -9). After the session timeout the other takes them over, with the table
    it followed as a standby; what the dead one had routed but not committed is routed again (the
    sessions agent drops those events by id) and the activity it had not committed is read again
    (skipped by the offsets in the table)."""
    s = pipeline.settings
    workers = Workers(pipeline)
    run = "x" + uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=3, minutes=30)
    filler = Filler(s, run, t0)
    script = Script(s, run, t0, filler)
    started = time.monotonic()
    try:
        workers.quiet()
        workers.sup.start(workers.second)
        victim = workers.raw_holder()
        survivor = "router-2" if victim == "router" else "router"
        filler.started()
        script.send(0, 6)  # minutes 0-5
        script.send(6, 9)  # 10-12
        os.killpg(workers.sup.running_pid(victim), signal.SIGKILL)  # mid-stream
        script.send(9, 12)  # 13-15: the collector takes them while no worker routes
        wait_for(lambda: workers.alone(survivor), 120, 1, what=f"{survivor} alone after the kill of {victim}")
        print(f"\n{victim} killed; {survivor} took over")
        script.wait_routed()
        script.send(12, 15)  # 60-62
        check(s, run, script, started)
    finally:
        filler.halt()
        workers.restore()
