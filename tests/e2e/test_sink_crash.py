"""kill -9 of the sink while it lands a stream of numbered events, a Trino query loop reading all
the while: every answer is a whole number of batches (rows, distinct ids and the highest number + 1
agree: batches land in Kafka order, each table's rows of a batch in one Iceberg commit), and once
the sink is back every event is there exactly once."""

from __future__ import annotations

import json
import os
import signal
import threading
import time
import uuid
from datetime import UTC, datetime

import pytest

from ops.stack import services
from tests.helpers import produce, query, wait_for

pytestmark = pytest.mark.e2e

TABLE = "guild_joins"


def test_a_sink_killed_mid_stream_leaves_whole_batches_and_lands_every_event_once(pipeline):
    s = pipeline.settings
    run = uuid.uuid4().hex[:8]
    sql = (
        f"SELECT count(*), count(DISTINCT event_id), coalesce(max(CAST(split_part(event_id, '-', 2) AS integer)) + 1, 0) "
        f"FROM {TABLE} WHERE host = '{run}'"
    )
    seen: list[tuple] = []
    stop = threading.Event()

    def loop():
        while not stop.is_set():
            try:
                seen.append(tuple(query(s, sql)[0]))
            except Exception:  # Trino busy: the next answer counts
                time.sleep(0.2)

    def send(start: int, n: int) -> None:
        now = datetime.now(UTC).isoformat(timespec="milliseconds")
        events = [
            {"event_id": f"{run}-{i:06d}", "event_type": "join_guild", "received_at": now, "host": run, "guild_id": "g"}
            for i in range(start, start + n)
        ]
        produce(s, s.topic_for("join_guild"), [json.dumps(e).encode() for e in events])

    reader = threading.Thread(target=loop, daemon=True)
    reader.start()
    sent = 0
    try:
        for _ in range(10):  # a stream, several batches
            send(sent, 50)
            sent += 50
            time.sleep(0.4)
        wait_for(lambda: query(s, sql)[0][0] > 0, 120, 0.5, what="the first batches")
        pid = pipeline.supervisor.running_pid("sink")
        assert pid is not None
        for _ in range(6):  # more while it dies
            send(sent, 50)
            sent += 50
            time.sleep(0.3)
        os.killpg(pid, signal.SIGKILL)
        for _ in range(6):  # and while it is down
            send(sent, 50)
            sent += 50
        svc = services.sink(s)
        pipeline.supervisor.stop("sink", timeout_s=10)
        pipeline.supervisor.start(svc)
        pipeline.supervisor.wait_healthy(svc)
        wait_for(lambda: query(s, sql)[0][0] >= sent, 240, 1.0, what=f"{sent} events after the restart")
        time.sleep(3)
    finally:
        stop.set()
        reader.join(30)
    assert query(s, sql) == [[sent, sent, sent]]  # every event once
    assert seen and all(rows == distinct == top for rows, distinct, top in seen), [x for x in seen if len(set(x)) > 1]
    assert [x[0] for x in seen] == sorted(x[0] for x in seen)  # never fewer rows than a moment before
