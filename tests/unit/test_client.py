"""questlog_client against a tiny in-process HTTP server whose answers each test scripts."""

from __future__ import annotations

import itertools
import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections import Counter
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from questlog.settings import REPO_ROOT
from questlog_client import InvalidEvent, Tracker, backoff


class Collector:
    """Records every POST /events (arrival time, parsed body) and answers from ``script`` (a list
    of (status, headers) used in turn; 202 once it is empty)."""

    def __init__(self) -> None:
        self.requests: list[tuple[float, list[dict]]] = []
        self.script: list[tuple[int, dict[str, str]]] = []
        self.lock = threading.Lock()
        outer = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                with outer.lock:
                    outer.requests.append((time.monotonic(), body))
                    status, headers = outer.script.pop(0) if outer.script else (202, {})
                payload = json.dumps({"error": "scripted"} if status >= 300 else {"accepted": len(body)}).encode()
                self.send_response(status)
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(payload)))
                self.end_headers()
                self.wfile.write(payload)

            def log_message(self, *args) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def ids(self) -> list[str]:
        return [e["event_id"] for _, body in self.requests for e in body]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def collector():
    c = Collector()
    yield c
    c.close()


def closed_port() -> str:
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return f"http://127.0.0.1:{port}"


def test_batches_by_size_and_by_time(collector):
    t = Tracker(collector.url, batch_size=100, flush_interval_s=1.0, catalog=None)
    for i in range(250):
        t.track("default", n=i)
    assert t.flush(10)
    sizes = sorted(len(body) for _, body in collector.requests)
    assert sizes == [50, 100, 100]  # two full batches at once, the rest when the interval came
    ids = collector.ids()
    assert len(set(ids)) == 250
    first = next(e for _, body in collector.requests for e in body if e["n"] == 0)
    assert first["event_type"] == "default" and first["n"] == 0
    assert first["client_ts"].endswith("+00:00")
    # by time: a single event is sent within about the interval, with no batch to fill
    started = time.monotonic()
    t.track("default")
    assert t.flush(5)
    assert time.monotonic() - started < 3.0
    assert t.stats.accepted == 251 and t.stats.accepted_by_type["default"] == 251
    t.close()


def test_ids_and_client_ts_are_given_at_track_time(collector):
    t = Tracker(collector.url, flush_interval_s=5, catalog=None)
    before = time.time()
    event_id = t.track("default")
    time.sleep(0.5)
    t.flush(5)
    (event,) = collector.requests[0][1]
    assert event["event_id"] == event_id
    from datetime import datetime

    ts = datetime.fromisoformat(event["client_ts"]).timestamp()
    assert before - 0.01 <= ts <= before + 0.2  # the track call, not the send half a second later
    t.close()


def test_retries_keep_the_same_ids_and_back_off(collector):
    collector.script = [(503, {}), (500, {}), (502, {})]
    t = Tracker(collector.url, batch_size=10, flush_interval_s=0.05, backoff_base_s=0.2, backoff_max_s=5, catalog=None)
    ids = [t.track("default") for _ in range(10)]
    assert t.flush(20)
    assert len(collector.requests) == 4
    for _, body in collector.requests:
        assert [e["event_id"] for e in body] == ids  # every attempt: the same events, the same ids
        assert body == collector.requests[0][1]
    gaps = [b[0] - a[0] for a, b in itertools.pairwise(collector.requests)]
    # equal jitter: attempt k waits between half and all of 0.2 * 2**k
    for k, gap in enumerate(gaps):
        assert 0.2 * 2**k / 2 - 0.02 <= gap <= 0.2 * 2**k + 1.0, gaps
    assert t.stats.retries == 3 and t.stats.errors == Counter({"503": 1, "500": 1, "502": 1})
    assert t.stats.accepted == 10
    t.close()


def test_backoff_is_exponential_capped_and_jittered():
    waits = [[backoff(k, 0.5, 8.0) for _ in range(200)] for k in range(8)]
    for k, ws in enumerate(waits):
        cap = min(8.0, 0.5 * 2**k)
        assert all(cap / 2 <= w <= cap for w in ws)
        assert len(set(ws)) > 150  # jittered, not one value
    assert max(waits[7]) <= 8.0


def test_retry_after_is_honoured(collector):
    collector.script = [(503, {"Retry-After": "2"}), (429, {"Retry-After": "1"})]
    t = Tracker(collector.url, batch_size=5, flush_interval_s=0.05, backoff_base_s=0.01, catalog=None)
    for _ in range(5):
        t.track("default")
    assert t.flush(20)
    times = [at for at, _ in collector.requests]
    assert len(times) == 3
    assert 1.95 <= times[1] - times[0] <= 4.0  # not the 10 ms backoff: the server's 2 s
    assert 0.95 <= times[2] - times[1] <= 3.0
    t.close()


def test_timeouts_and_connection_errors_are_retried(collector):
    url = closed_port()
    t = Tracker(url, batch_size=3, flush_interval_s=0.05, backoff_base_s=0.05, backoff_max_s=0.2, catalog=None)
    ids = [t.track("default") for _ in range(3)]
    time.sleep(1.0)
    assert t.stats.errors["connection error"] >= 2 and t.stats.accepted == 0
    assert t.queued == 3
    t.url = collector.url + "/events"  # the collector comes back
    assert t.flush(10)
    assert collector.ids() == ids
    t.close()


def test_4xx_is_reported_and_not_retried(collector, caplog):
    collector.script = [(400, {})]
    refused = []
    t = Tracker(
        collector.url,
        batch_size=4,
        flush_interval_s=0.05,
        catalog=None,
        on_refused=lambda events, status, reason: refused.append((events, status, reason)),
    )
    for _ in range(4):
        t.track("default")
    assert t.flush(10)
    time.sleep(0.5)
    assert len(collector.requests) == 1
    assert t.stats.refused == 4 and t.stats.accepted == 0 and t.stats.refused_by_type["default"] == 4
    ((events, status, reason),) = refused
    assert status == 400 and reason == "scripted" and len(events) == 4
    assert "refused with 400" in caplog.text
    t.close()


def test_batches_are_capped_by_bytes_as_well_as_events(collector):
    t = Tracker(collector.url, batch_size=500, max_batch_bytes=20_000, flush_interval_s=0.05, catalog=None)
    ids = [t.track("default", pad="y" * 1_000) for _ in range(100)]
    assert t.flush(10)
    sizes = [len(json.dumps(body, separators=(",", ":"))) for _, body in collector.requests]
    assert max(sizes) <= 20_000 and len(collector.requests) >= 100 * 1_000 // 20_000, sizes
    big = t.track_event({"event_type": "default", "pad": "x" * 25_000}, check=False)  # alone, it is sent as it is
    assert t.flush(10)
    assert sorted(collector.ids()) == sorted([*ids, big]) and t.stats.accepted == 101
    t.close()


def test_a_413_is_split_in_halves_and_resent_with_the_same_ids(collector, tmp_path, caplog):
    collector.script = [(413, {}), (413, {})]  # the batch of 8, then its first half of 4
    spool = tmp_path / "spool"
    t = Tracker(collector.url, batch_size=8, flush_interval_s=0.05, catalog=None, spool_dir=spool, senders=1)
    ids = [t.track("default", n=i) for i in range(8)]
    assert t.flush(10)
    assert [len(body) for _, body in collector.requests] == [8, 4, 2, 2, 4]
    accepted = [e["event_id"] for _, body in collector.requests[2:] for e in body]
    assert accepted == ids  # each once, in order, with its own id
    assert t.stats.accepted == 8 and t.stats.refused == 0 and t.stats.splits == 2
    assert "too large for the collector (413); sending it in halves" in caplog.text
    t.close()
    assert not list(spool.glob("spool-*.log"))  # every half done, the split batches too


def test_a_413_for_one_event_is_final(collector):
    collector.script = [(413, {})]
    t = Tracker(collector.url, batch_size=1, flush_interval_s=0.05, catalog=None)
    t.track("default")
    assert t.flush(10)
    assert t.stats.refused == 1 and len(collector.requests) == 1
    t.close()


@pytest.mark.parametrize("status", [401, 403])
def test_a_401_or_403_keeps_the_batch_in_the_spool_and_says_so(collector, tmp_path, caplog, status):
    collector.script = [(status, {})] * 3
    spool = tmp_path / "spool"
    t = Tracker(collector.url, batch_size=5, flush_interval_s=0.05, catalog=None, spool_dir=spool, backoff_base_s=0.05)
    ids = [t.track("default", n=i) for i in range(5)]
    deadline = time.monotonic() + 10  # the first answer, however slow the machine
    while t.stats.unauthorized < 5 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert t.stats.unauthorized == 5 and t.stats.refused == 0  # refused for now, not dropped
    assert f"refused with {status} (scripted): the write key is missing or wrong" in caplog.text
    assert f"kept in the spool {spool}" in caplog.text
    assert t.flush(10)  # the key is fixed (the script runs out): the same batch goes through
    assert collector.ids()[-5:] == ids and t.stats.accepted == 5
    assert [len(body) for _, body in collector.requests] == [5, 5, 5, 5]
    t.close()


def test_a_401_leaves_the_batch_in_the_spool_for_the_next_tracker(collector, tmp_path):
    collector.script = [(401, {})] * 1000
    spool = tmp_path / "spool"
    first = Tracker(collector.url, batch_size=5, flush_interval_s=0.05, catalog=None, spool_dir=spool)
    ids = [first.track("default", n=i) for i in range(5)]
    assert not first.close(0.3)
    assert first.stats.lost == 0 and first.stats.refused == 0
    collector.script = []
    second = Tracker(collector.url, spool_dir=spool, catalog=None)
    assert second.stats.recovered == 5 and second.flush(10)
    assert collector.ids()[-5:] == ids
    second.close()


def test_queue_full_drop_oldest_counts_what_it_drops():
    t = Tracker(
        closed_port(),
        batch_size=1000,
        flush_interval_s=60,
        max_queue=10,
        on_full="drop_oldest",
        catalog=None,
        senders=1,
    )
    ids = [t.track("default") for _ in range(25)]
    assert t.stats.dropped == 15 and t.stats.tracked == 25
    assert [e["event_id"] for e in t._queue] == ids[15:]  # the newest ten are kept
    assert t.queued == 10
    t.close(0.1)
    assert t.stats.lost == 10


def test_queue_full_block_waits_then_drops():
    # One sender stuck retrying its batch, four batches waiting for it (the in-memory limit), then
    # the queue's five: the eleventh event finds no room.
    t = Tracker(
        closed_port(),
        batch_size=1,
        flush_interval_s=0.01,
        max_queue=5,
        on_full="block",
        block_timeout_s=0.3,
        catalog=None,
        senders=1,
        backoff_base_s=1,
    )
    for _ in range(10):
        t.track("default")
    time.sleep(1.5)
    assert t.stats.dropped == 0 and len(t._queue) == 5
    started = time.monotonic()
    t.track("default")
    assert 0.25 <= time.monotonic() - started < 2.0
    assert t.stats.dropped == 1 and t.queued == 10
    t.close(0.1)
    assert t.stats.lost == 10


def test_queue_full_block_resumes_when_room_is_made(collector):
    t = Tracker(
        collector.url,
        batch_size=5,
        flush_interval_s=0.05,
        max_queue=5,
        on_full="block",
        block_timeout_s=10,
        catalog=None,
    )
    for _ in range(200):
        t.track("default")
    assert t.flush(10)
    assert t.stats.dropped == 0 and len(set(collector.ids())) == 200
    t.close()


def test_catalog_check_fails_early(catalog):
    t = Tracker(closed_port(), catalog=catalog, flush_interval_s=60)
    t.track("purchase_sword", sword_type="katana", price=12.5, user_id="p1")
    with pytest.raises(InvalidEvent, match="unknown event_type 'buy_sword'"):
        t.track("buy_sword")
    with pytest.raises(InvalidEvent, match="field 'price': expected double"):
        t.track("purchase_sword", price="a lot")
    with pytest.raises(InvalidEvent, match="'level': required"):
        t.track("level_up")
    with pytest.raises(InvalidEvent, match="not in the 'join_guild' schema"):
        t.track("join_guild", guild="g")
    t.track_event({"event_type": "level_up"}, check=False)  # a deliberate dead letter
    assert t.stats.tracked == 2
    t.close(0.1)


def test_spool_a_second_tracker_sends_what_the_first_could_not(collector, tmp_path):
    spool = tmp_path / "spool"
    first = Tracker(
        closed_port(), batch_size=50, flush_interval_s=0.05, spool_dir=spool, catalog=None, backoff_base_s=0.05
    )
    ids = [first.track("default", n=i) for i in range(120)]
    assert not first.close(0.5)  # the collector is unreachable: the events stay in the spool
    assert first.stats.lost == 0 and list(spool.glob("spool-*.log"))
    second = Tracker(collector.url, spool_dir=spool, catalog=None)
    assert second.stats.recovered == 120
    assert second.flush(10)
    assert sorted(collector.ids()) == sorted(ids)  # the original ids, each once
    assert second.stats.accepted == 120
    second.close()
    assert not list(spool.glob("spool-*.log"))  # everything done: no segment left
    third = Tracker(collector.url, spool_dir=spool, catalog=None)
    assert third.stats.recovered == 0
    third.close()


CRASHING = """
import sys, time
from questlog_client import Tracker
t = Tracker(sys.argv[1], batch_size=40, flush_interval_s=0.05, spool_dir=sys.argv[2], catalog=None,
            fsync="batch", backoff_base_s=0.05)
ids = [t.track("default", n=i) for i in range(100)]
while t._spool.appended < 3:  # every event is in a spooled batch
    time.sleep(0.01)
print(" ".join(ids), flush=True)
time.sleep(60)
"""


def test_spool_survives_kill_9(collector, tmp_path):
    spool = tmp_path / "spool"
    proc = subprocess.Popen(
        [sys.executable, "-c", CRASHING, closed_port(), str(spool)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
    )
    ids = proc.stdout.readline().split()
    assert len(ids) == 100
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(10)
    with open(next(spool.glob("spool-*.log")), "ab") as f:
        f.write(b'B 99 5000\n[{"torn')  # and a record torn by the crash mid-write is ignored
    second = Tracker(collector.url, spool_dir=spool, catalog=None)
    assert second.stats.recovered == 100
    assert second.flush(10)
    assert sorted(collector.ids()) == sorted(ids)
    second.close()


def test_one_tracker_per_spool(tmp_path):
    t = Tracker(closed_port(), spool_dir=tmp_path, catalog=None)
    with pytest.raises(RuntimeError, match="in use"):
        Tracker(closed_port(), spool_dir=tmp_path, catalog=None)
    t.close(0.1)


def test_many_batches_spooled_are_read_back_in_order(collector, tmp_path):
    # More batches than kept in memory, across segments: bodies are read back from disk.
    t = Tracker(
        collector.url,
        batch_size=10,
        flush_interval_s=0.01,
        spool_dir=tmp_path,
        catalog=None,
        spool_segment_bytes=2000,
        fsync="never",
    )
    ids = [t.track("default", n=i) for i in range(500)]
    assert t.flush(20)
    assert sorted(collector.ids()) == sorted(ids)
    t.close()
    assert not list(tmp_path.glob("spool-*.log"))


EXITING = """
import sys
from questlog_client import Tracker
t = Tracker(sys.argv[1], flush_interval_s=60, catalog=None)
print(" ".join(t.track("default", n=i) for i in range(30)), flush=True)
"""  # exits without close() or flush(): the atexit hook sends them


def test_close_runs_at_interpreter_exit(collector):
    out = subprocess.run(
        [sys.executable, "-c", EXITING, collector.url],
        capture_output=True,
        text=True,
        cwd=REPO_ROOT,
        env={**os.environ, "PYTHONPATH": str(REPO_ROOT)},
        timeout=60,
    )
    assert out.returncode == 0, out.stderr
    ids = out.stdout.split()
    assert len(ids) == 30 and sorted(collector.ids()) == sorted(ids)
