"""`questlog status` without services: reason classes, the restart file the Watchdog writes, the
table it prints, and its answer within the deadline when nothing answers at all."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from rich.console import Console

from ops import status as st
from ops.stack.process import Service, Supervisor
from ops.stack.runner import Watchdog
from questlog.deadletters import REASON_CODES, reason_code
from questlog.settings import Settings


@pytest.mark.parametrize(
    "reason, expected",
    [
        ("payload is not valid JSON: unexpected character", "not_json"),
        ("event must be a JSON object, got list [1]", "not_object"),
        ("unknown event_type 'nope'; known types: default, join_guild", "unknown_type"),
        ("field 'event_id': expected 1 to 128 characters, got string '<>'", "bad_event_id"),
        ("field 'price': required, missing; field 'sword_type': required, missing", "missing_field"),
        ("field 'price': required, got null", "null_field"),
        ("field 'colour': not in the 'purchase_sword' schema (fields: price, sword_type)", "unknown_field"),
        ("3 fields not in the 'join_guild' schema: a, b, c (fields: guild_id)", "unknown_field"),
        ("field 'price': expected double, got string 'a lot'", "wrong_type"),
        ("field 'price': expected double, got string 'a lot'; field 'x': required, missing", "wrong_type"),
        ("the typed copy is 1000123 bytes, over the 1000000-byte limit", "too_large"),
        ("Kafka refused the record for events.x: MessageSizeTooLargeError()", "kafka_refused"),
        ("an empty array: no event", "bad_record"),
        ("5001 events in one record; at most 5000", "bad_record"),
        ("something new", "other"),
        (None, "other"),
    ],
)
def test_reason_codes(reason, expected):
    assert reason_code(reason) == expected
    assert expected in REASON_CODES


def test_the_watchdog_writes_its_restart_counts_where_status_reads_them(tmp_path):
    sup = Supervisor(tmp_path)
    failing = Service("failing", [sys.executable, "-c", "import sys; sys.exit(3)"], health=lambda: False)
    sup.start(failing)
    dog = Watchdog(sup, [failing])
    dog.BACKOFF_FIRST_S = dog.BACKOFF_CAP_S = 0.1
    settings = Settings.from_env({}, home=str(tmp_path))
    assert st._restarts(settings) == {"failing": 0}
    deadline = time.monotonic() + 20
    while dog.restarts["failing"] < 2 and time.monotonic() < deadline:
        dog.check()
        time.sleep(0.05)
    sup.stop("failing", timeout_s=5)
    assert st._restarts(settings) == {"failing": dog.restarts["failing"]} and dog.restarts["failing"] >= 2


def sample() -> st.Status:
    return st.Status(
        healthy=False,
        took_s=0.42,
        services=[
            st.ServiceStatus("kafka", True, True, "ok, 9 topics", 11, 3725.0, 0),
            st.ServiceStatus("router", False, False, "down (not running)", None, None, 3),
        ],
        router_lag=st.Lag(1234, 75.0),
        sink_lag={"events.purchase_sword": st.Lag(0, 0.0)},
        tables=[
            st.TableStatus("sword_purchases", "events.purchase_sword", 12.0, "2026-11-29 22:00:00.000", 150, 3, 40960)
        ],
        dead_letters_last_hour={"wrong type": 7, "not JSON": 1},
        errors={"hdfs usage": "no answer within 1.5s"},
    )


def test_the_table_names_every_figure():
    console = Console(record=True, width=140)
    console.print(st.table(sample()))
    text = console.export_text()
    assert "UNHEALTHY" in text
    assert "ok, 9 topics; up 1h02m; 0 restarts" in text
    assert "down (not running); 3 restarts" in text
    assert "1,234 records, oldest 1m15s on events" in text
    assert "caught up on events.purchase_sword" in text
    assert "newest 12s ago" in text and "150 rows today; 3 files, 40.0 KiB on HDFS" in text
    assert "7 x wrong type" in text and "1 x not JSON" in text
    assert "no answer within 1.5s" in text


@pytest.fixture
def black_hole():
    """A loopback port that takes connections and never answers: a client times out on it."""
    import socket

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen(64)
    yield f"127.0.0.1:{sock.getsockname()[1]}"
    sock.close()


def unanswered(tmp_path, black_hole) -> Settings:
    """Settings whose Trino and WebHDFS take connections and never answer; nothing else listens."""
    return Settings.from_env(
        {}, home=str(tmp_path), kafka_bootstrap="127.0.0.1:1", webhdfs_url=f"http://{black_hole}",
        trino_url=f"http://{black_hole}", collector_bind="127.0.0.1:2", router_web_port=3,
        sink_metrics_bind="127.0.0.1:4",
    )  # fmt: skip


def collect_within(settings: Settings, deadline_s: float) -> st.Status:
    """``st.collect`` with a short deadline (the module's deadline restored after), no refresh."""
    saved = st.DEADLINE_S, st.PROBE_TIMEOUT_S
    st.set_deadline(deadline_s)
    try:
        return st.collect(settings, refresh_after=False)
    finally:
        st.DEADLINE_S, st.PROBE_TIMEOUT_S = saved


def test_status_answers_within_its_deadline_when_nothing_listens(tmp_path, black_hole):
    # Ports nobody listens on or nobody answers: every probe fails or times out; the answer still
    # comes, unhealthy.
    settings = Settings.from_env(
        {},
        home=str(tmp_path),
        kafka_bootstrap="127.0.0.1:1",
        webhdfs_url=f"http://{black_hole}",
        trino_url=f"http://{black_hole}",
        collector_bind="127.0.0.1:2",
        router_web_port=3,
        sink_metrics_bind="127.0.0.1:4",
    )
    started = time.monotonic()  # the command itself: it leaves with os._exit, not to be run in-process
    result = subprocess.run(
        [str(Path(sys.executable).parent / "questlog"), "status", "--json", "--no-refresh"],
        env={**os.environ, **settings.to_env()},
        capture_output=True,
        text=True,
        timeout=30,
    )
    took = time.monotonic() - started
    assert result.returncode == 1, result.stderr
    answer = json.loads(result.stdout)
    assert answer["healthy"] is False
    # Nothing started here and nothing answers where the settings point: each verdict says why.
    assert all(s["verdict"].startswith("down: ") and not s["up"] for s in answer["services"]), answer["services"]
    assert all(s["pid"] is None and s["uptime_s"] is None and s["restarts"] is None for s in answer["services"])
    assert answer["took_s"] <= st.DEADLINE_S + 0.3 and took < st.DEADLINE_S + 1.5
    # a figure that never answered is either an error or, still being asked, pending (a refresh asks again)
    assert {"freshness sword_purchases", "dead letters", "hdfs usage"} <= set(answer["errors"]) | set(answer["pending"])


def test_a_remote_service_shows_its_verdict_without_pid_uptime_or_restarts():
    status = sample()
    status.services.append(st.ServiceStatus("trino", True, True, "ok", None, None, None))
    status.tables.append(st.TableStatus("chest_opens", "events.open_chest", rows_today=0, note=st.NO_TABLE_YET))
    console = Console(record=True, width=140)
    console.print(st.table(status))
    text = console.export_text()
    assert [line for line in text.splitlines() if "trino" in line][0].split("│")[3].strip() == "ok"
    assert "no table yet" in text


def test_a_figure_slower_than_the_deadline_is_shown_from_the_kept_answer_with_its_age(tmp_path, black_hole):
    """Trino and WebHDFS take connections and never answer (a cold or busy machine): the figures
    come from the answers an earlier call or refresh kept, each with its age; nothing times out."""
    settings = unanswered(tmp_path, black_hole)
    (tmp_path / "run").mkdir()
    at = time.time() - 40
    st.save_answers(
        settings,
        {
            "freshness sword_purchases": ("2026-01-02 03:04:05.000", 12, None),
            "dead letters": {"wrong_type": 3},
            "hdfs usage": {"sword_purchases": (4, 4096)},
        },
        at,
    )
    status = collect_within(settings, 0.6)
    swords = next(t for t in status.tables if t.name == "sword_purchases")
    assert (swords.rows_today, swords.files, swords.bytes) == (12, 4, 4096)
    assert status.dead_letters_last_hour == {"wrong_type": 3}
    assert 39 <= status.ages["dead letters"] < 60 and 39 <= status.ages["freshness sword_purchases"] < 60
    assert not {"dead letters", "hdfs usage", "freshness sword_purchases"} & set(status.errors)
    others = [t.name for t in status.tables if t.name != "sword_purchases"]
    assert {f"freshness {name}" for name in others} <= set(status.pending)  # never answered: being asked
    console = Console(record=True, width=160)
    console.print(st.table(status))
    text = console.export_text()
    assert "12 rows today (as of 40s ago)" in text or "12 rows today (as of 41s ago)" in text
    assert "first answer on its way" in text
    assert not [
        line for line in text.splitlines() if ("freshness" in line or "dead letters" in line) and "no answer" in line
    ]


def test_the_sink_lag_is_counted_from_kept_offsets_when_webhdfs_is_slower_than_the_deadline(
    tmp_path, black_hole, monkeypatch
):
    """The sink's offsets come from its checkpoint through WebHDFS: on a cold NameNode they may miss
    the deadline. The lag is then counted from the offsets an earlier call kept, and the sink's rows
    say how old they are; no row says TimeoutError."""
    settings = unanswered(tmp_path, black_hole)
    (tmp_path / "run").mkdir()
    st.save_answers(settings, {"sink offsets": {"events.purchase_sword": {0: 120, 1: 7}}}, time.time() - 30)
    seen = []

    def kafka_lags(settings, sink_offsets, topics):
        seen.append(sink_offsets)
        return st.Lag(0, 0.0), {"events.purchase_sword": st.Lag(5, 2.0)}

    monkeypatch.setattr(st, "kafka_lags", kafka_lags)
    status = collect_within(settings, 0.6)
    assert seen == [{"events.purchase_sword": {0: 120, 1: 7}}]  # partitions as numbers again
    assert "sink offsets" not in status.errors and "sink offsets" not in status.pending
    assert 29 <= status.ages["sink offsets"] < 60
    console = Console(record=True, width=160)
    console.print(st.table(status))
    sink_rows = [line for line in console.export_text().splitlines() if "sink lag" in line]
    assert sink_rows and all("as of 3" in line for line in sink_rows), sink_rows
    assert "TimeoutError" not in console.export_text()


def test_without_kept_offsets_a_slow_checkpoint_is_pending_not_an_error(tmp_path, black_hole):
    settings = unanswered(tmp_path, black_hole)
    status = collect_within(settings, 0.6)
    assert "sink offsets" in status.pending and "sink offsets" not in status.errors
