"""Player sessions on the real stack: scripted players whose events have known gaps (event time is
their client_ts, hours ago) give exactly the expected rows in Trino's `sessions` table; the same
after a kill -9 of the router mid-stream and after the same events are sent again (a client's
retry, a replayed backlog)."""

from __future__ import annotations

import json
import os
import random
import re
import signal
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest
import requests

from ops.stack import services
from tests.helpers import query, wait_for

pytestmark = pytest.mark.e2e

# QUESTLOG_SESSION_GAP_S is the default, 30 minutes.


def events(run: str, player: str, minutes: list[int], t0: datetime, types: list[str] | None = None) -> list[dict]:
    types = types or ["purchase_sword"] * len(minutes)
    return [
        {
            "event_id": f"{run}-{player}-{i:03d}",
            "event_type": event_type,
            "user_id": f"{run}-{player}",
            "client_ts": (t0 + timedelta(minutes=m)).isoformat(timespec="milliseconds"),
        }
        for i, (m, event_type) in enumerate(zip(minutes, types, strict=True))
    ]


def post(settings, batch: list[dict]) -> None:
    for i in range(0, len(batch), 50):
        r = requests.post(f"{settings.collector_url}/events", json=batch[i : i + 50], timeout=30)
        assert r.status_code in (200, 201, 202), r.text


def sessions(settings, run: str) -> list[tuple]:
    """(player, events, duration_s, first event id, last event id, events_by_type) per row, sorted,
    and whether session ids are unique."""
    rows = query(
        settings,
        "SELECT user_id, events, duration_s, first_event_id, last_event_id, events_by_type, session_id "
        f"FROM sessions WHERE user_id LIKE '{run}-%' ORDER BY user_id, session_start",
    )
    assert len({r[6] for r in rows}) == len(rows), rows
    return [
        (r[0][len(run) + 1 :], r[1], r[2], r[3][len(run) + 1 :], r[4][len(run) + 1 :], json.loads(r[5])) for r in rows
    ]


def router_metric(settings, name: str, outcome: str) -> float:
    text = requests.get(settings.router_metrics_url, timeout=5).text
    m = re.search(rf'^{name}{{outcome="{outcome}"}} ([0-9.e+]+)$', text, re.M)
    return float(m.group(1)) if m else 0.0


def test_scripted_players_give_exactly_the_expected_sessions_and_a_replay_changes_nothing(pipeline):
    s = pipeline.settings
    run = "s" + uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=6)
    sword, guild = "purchase_sword", "join_guild"
    batch = (
        events(run, "a", [0, 1, 2, 40, 41, 100], t0)  # gaps 38 and 59 min: three sessions
        + events(run, "b", [0, 25, 50, 75], t0, [guild] * 4)  # gaps of 25 min: one session
        + events(run, "c", [10, 12, 13], t0, [sword, guild, sword])
    )
    random.Random(7).shuffle(batch)  # any order across players and in time
    post(s, batch)
    expected = [
        ("a", 3, 120.0, "a-000", "a-002", {sword: 3}),
        ("a", 2, 60.0, "a-003", "a-004", {sword: 2}),
        ("a", 1, 0.0, "a-005", "a-005", {sword: 1}),
        ("b", 4, 4500.0, "b-000", "b-003", {guild: 4}),
        ("c", 3, 180.0, "c-000", "c-002", {guild: 1, sword: 2}),
    ]
    wait_for(lambda: len(sessions(s, run)) >= len(expected), 180, 2, what="the scripted sessions in Trino")
    time.sleep(2 * s.sink_trigger_s)
    assert sessions(s, run) == expected

    # The same events again (a client's retry of the whole backlog): dropped by their ids or against
    # the closed sessions, nothing new lands.
    def dropped() -> float:  # recognised by id, or at or before the end of a closed session
        return sum(router_metric(s, "questlog_sessions_events_total", o) for o in ("duplicate", "late_dropped"))

    before = dropped()
    post(s, batch)
    wait_for(
        lambda: dropped() >= before + len(batch),
        60,
        1,
        what="the resent events dropped by the sessions agent",
    )
    time.sleep(4 * s.sink_trigger_s + s.session_tick_s)
    assert sessions(s, run) == expected


def test_a_router_killed_mid_stream_loses_and_doubles_no_session(pipeline):
    s = pipeline.settings
    run = "k" + uuid.uuid4().hex[:8]
    t0 = datetime.now(UTC).replace(second=0, microsecond=0) - timedelta(hours=5)
    players = [f"p{k:02d}" for k in range(30)]
    # three rounds per player: minutes 0-5 and 10-15 (one session), then 60-62 (a second one)
    rounds = [[0, 1, 2, 3, 4, 5], [10, 11, 12, 13, 14, 15], [60, 61, 62]]

    def round_events(r: int) -> list[dict]:
        out = []
        for p in players:
            evs = events(run, p, [0, 1, 2, 3, 4, 5, 10, 11, 12, 13, 14, 15, 60, 61, 62], t0)
            start = sum(len(x) for x in rounds[:r])
            out += evs[start : start + len(rounds[r])]
        random.Random(r).shuffle(out)
        return out

    post(s, round_events(0))
    pid = pipeline.supervisor.running_pid("router")
    assert pid is not None
    second = round_events(1)
    post(s, second[: len(second) // 2])
    os.killpg(pid, signal.SIGKILL)  # mid-stream: the first half of round 2 may or may not be routed
    post(s, second[len(second) // 2 :])  # the collector takes them while the router is down
    svc = services.router(s)
    pipeline.supervisor.stop("router", timeout_s=10)
    pipeline.supervisor.start(svc)
    pipeline.supervisor.wait_healthy(svc)
    post(s, round_events(2))
    expected = []
    for p in players:
        expected.append((p, 12, 900.0, f"{p}-000", f"{p}-011", {"purchase_sword": 12}))
        expected.append((p, 3, 120.0, f"{p}-012", f"{p}-014", {"purchase_sword": 3}))
    wait_for(lambda: len(sessions(s, run)) >= len(expected), 240, 2, what="the sessions after the kill")
    time.sleep(2 * s.sink_trigger_s + s.session_tick_s)
    assert sessions(s, run) == expected


def test_no_client_may_send_a_session(pipeline):
    s = pipeline.settings
    r = requests.post(f"{s.collector_url}/events", json={"event_type": "sessions", "user_id": "x"}, timeout=10)
    assert r.status_code == 400, r.text
