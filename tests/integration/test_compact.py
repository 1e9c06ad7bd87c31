"""Table maintenance against the real stack (compactor/compact.py): the small files the sink's
batches left become one through Iceberg's optimize, while a query loop and the sink go on, and no
query ever sees part of a batch, a row twice or a row missing; old snapshots are expired but the
sink's latest is kept."""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta

import pytest

from compactor.compact import Compactor
from tests.helpers import produce, query, wait_for

pytestmark = pytest.mark.integration

TABLE = "sword_purchases"


def a_date() -> datetime:
    """A date of this test's own (no other test lands rows there)."""
    return datetime(2001, 1, 1, 12, tzinfo=UTC) + timedelta(days=random.randrange(3000))


def land_batch(settings, day: datetime, run: str, start: int, n: int, wait: bool = True) -> None:
    """``n`` events of ``day`` through the sink (sent at once), numbered from ``start``."""
    events = [
        {
            "event_id": f"{run}-{i:06d}",
            "event_type": "purchase_sword",
            "received_at": (day + timedelta(seconds=i)).isoformat(timespec="milliseconds"),
            "host": run,
            "sword_type": "katana",
            "price": float(i),
            "quantity": i,
            "user_id": f"u{i % 7}",
        }
        for i in range(start, start + n)
    ]
    produce(settings, settings.topic_for("purchase_sword"), [json.dumps(e).encode() for e in events])
    if wait:
        wait_for(lambda: count(settings, day) >= start + n, 120, 0.5, what=f"{start + n} rows of {day:%F}")


def count(settings, day: datetime) -> int:
    return query(settings, f"SELECT count(*) FROM {TABLE} WHERE dt = '{day:%Y-%m-%d}'")[0][0]


def ids(settings, day: datetime) -> list[str]:
    return sorted(r[0] for r in query(settings, f"SELECT event_id FROM {TABLE} WHERE dt = '{day:%Y-%m-%d}'"))


def data_files(settings, day: datetime) -> int:
    return query(settings, f"SELECT count(*) FROM \"{TABLE}$files\" WHERE partition.dt = '{day:%Y-%m-%d}'")[0][0]


class QueryLoop(threading.Thread):
    """Reads the partition again and again: (rows, distinct ids, highest number + 1) each time.
    Batches land in Kafka order, so a whole number of batches is a prefix of the numbers: the three
    agree. A batch seen in part, twice, or a row missing would break that."""

    def __init__(self, settings, day):
        super().__init__(daemon=True)
        self.settings, self.day, self.stop, self.seen = settings, day, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            self.seen.append(
                tuple(
                    query(
                        self.settings,
                        f"SELECT count(*), count(DISTINCT event_id), "
                        f"coalesce(max(CAST(split_part(event_id, '-', 2) AS integer)) + 1, 0) "
                        f"FROM {TABLE} WHERE dt = '{self.day:%Y-%m-%d}'",
                    )[0]
                )
            )


def test_small_batches_become_one_file_and_every_query_meanwhile_sees_whole_batches(live_settings):
    day, run = a_date(), uuid.uuid4().hex[:8]
    for b in range(6):
        land_batch(live_settings, day, run, b * 20, 20)
    before = ids(live_settings, day)
    assert len(before) == 120 and data_files(live_settings, day) >= 6

    loop = QueryLoop(live_settings, day)
    loop.start()
    compacting = threading.Thread(target=lambda: Compactor(live_settings).run([TABLE], [f"{day:%Y-%m-%d}"]))
    compacting.start()
    for b in range(6, 10):  # the sink goes on landing meanwhile
        land_batch(live_settings, day, run, b * 20, 20, wait=False)
        time.sleep(0.7)
    compacting.join(180)
    wait_for(lambda: count(live_settings, day) >= 200, 120, 0.5, what="the batches sent during compaction")
    time.sleep(1)
    loop.stop.set()
    loop.join()

    assert not compacting.is_alive()
    assert loop.seen and all(rows == distinct == top for rows, distinct, top in loop.seen), loop.seen
    assert [s[0] for s in loop.seen] == sorted(s[0] for s in loop.seen)  # never fewer rows than before
    assert ids(live_settings, day) == sorted(f"{run}-{i:06d}" for i in range(200))
    # the six batches before it became one file (what landed meanwhile may still be small files)
    assert data_files(live_settings, day) <= 5


def test_expiry_drops_old_snapshots_but_keeps_the_sinks_latest(live_settings):
    day, run = a_date(), uuid.uuid4().hex[:8]
    land_batch(live_settings, day, run, 0, 5)
    c = Compactor(live_settings)
    latest = query(
        live_settings,
        f"SELECT snapshot_id FROM \"{TABLE}$snapshots\" WHERE element_at(summary, 'questlog.checkpoint') IS NOT NULL "
        "ORDER BY committed_at DESC LIMIT 1",
    )[0][0]
    before = c.snapshots(TABLE)
    c.expire(TABLE, grace_s=0)
    snapshots = [r[0] for r in query(live_settings, f'SELECT snapshot_id FROM "{TABLE}$snapshots"')]
    assert latest in snapshots and len(snapshots) <= before
    assert ids(live_settings, day) == sorted(f"{run}-{i:06d}" for i in range(5))
