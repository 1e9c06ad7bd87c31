"""Compaction against the real stack: small batches the sink landed become one file, and no
query, sink batch or kill -9 ever sees or leaves a wrong count (questlog/compact.py)."""

from __future__ import annotations

import io
import json
import os
import random
import signal
import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from questlog.compact import PAUSE_ENV, STEPS, Compactor, Hdfs, path_of
from tests.helpers import produce, query, wait_for

pytestmark = pytest.mark.integration

TABLE = "sword_purchases"


def a_date() -> datetime:
    """A date of this test's own (no other test lands rows there)."""
    return datetime(2001, 1, 1, 12, tzinfo=UTC) + timedelta(days=random.randrange(3000))


def land_batch(settings, day: datetime, run: str, start: int, n: int) -> None:
    """``n`` events of ``day`` through the sink as one batch of their own: sent, then waited for."""
    events = [
        {
            "event_id": f"{run}-{i}",
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
    wait_for(lambda: count(settings, day) >= start + n, 120, 0.5, what=f"{start + n} rows of {day:%F}")


def count(settings, day: datetime) -> int:
    return query(settings, f"SELECT count(*) FROM {TABLE} WHERE dt = '{day:%Y-%m-%d}'")[0][0]


def ids(settings, day: datetime) -> list[str]:
    return sorted(r[0] for r in query(settings, f"SELECT event_id FROM {TABLE} WHERE dt = '{day:%Y-%m-%d}'"))


def files(settings, day: datetime) -> list[str]:
    c = Compactor(settings)
    meta = c.partition_meta(TABLE, f"{day:%Y-%m-%d}")
    return sorted(f.name for f in c.files(meta["externalLocation"]))


def committed(settings, day: datetime) -> None:
    """Wait until the sink committed every batch with files in the partition: a batch not yet
    committed may run again, and compaction carries its files instead of merging them."""
    c = Compactor(settings)

    def done():
        _, last = c.sink_progress()
        batches = [int(n.split("-b", 1)[1][:12]) for n in files(settings, day) if n.startswith("part-")]
        return last is not None and all(b <= last for b in batches)

    wait_for(done, 60, 0.5, what="the sink's commit of the partition's batches")


class QueryLoop(threading.Thread):
    """Counts the partition's rows again and again; every answer is kept."""

    def __init__(self, settings, day):
        super().__init__(daemon=True)
        self.settings, self.day, self.stop, self.seen = settings, day, threading.Event(), []

    def run(self):
        while not self.stop.is_set():
            self.seen.append(count(self.settings, self.day))


def compactor_process(settings, day: datetime, step: str) -> subprocess.Popen:
    env = {**os.environ, **settings.to_env(), PAUSE_ENV: step}
    return subprocess.Popen(
        [str(Path(sys.executable).parent / "questlog"), "compact", "--table", TABLE, "--date", f"{day:%Y-%m-%d}"],
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )


def paused(settings, step: str) -> Path:
    return settings.home_path / "run" / f"compact-paused-{step}"


def test_small_batches_become_one_file_and_every_query_meanwhile_sees_every_row_once(live_settings):
    day, run = a_date(), uuid.uuid4().hex[:8]
    for b in range(6):
        land_batch(live_settings, day, run, b * 20, 20)
    before_ids, before_files = ids(live_settings, day), files(live_settings, day)
    assert len(before_ids) == 120 and len(before_files) == 6, before_files
    committed(live_settings, day)

    loop = QueryLoop(live_settings, day)
    loop.start()
    time.sleep(1)
    reports = Compactor(live_settings).run([TABLE], [f"{day:%Y-%m-%d}"])
    time.sleep(1)
    loop.stop.set()
    loop.join()

    assert [r.done for r in reports] == [True]
    assert loop.seen and set(loop.seen) == {120}, loop.seen
    # every file was of a committed batch: all merged into one (far below the target size)
    after = files(live_settings, day)
    assert len(after) == 1 and after[0].startswith("c-"), after
    assert ids(live_settings, day) == before_ids
    # the merged file, read on HDFS without Trino: Trino's types, timestamps as INT64 micros
    import pyarrow.parquet as pq

    c = Compactor(live_settings)
    location = c.partition_meta(TABLE, f"{day:%Y-%m-%d}")["externalLocation"]
    merged = pq.read_table(io.BytesIO(c.fs.read(f"{path_of(location)}/{after[0]}")))
    assert merged.num_rows == 120
    assert str(merged.schema.field("received_at").type).startswith("timestamp[us")

    # the old generation goes once the grace period is over, never the current one
    assert c.cleanup(TABLE, [f"{day:%Y-%m-%d}"], grace_s=0)
    assert ids(live_settings, day) == before_ids


def test_a_batch_landing_during_compaction_is_kept(live_settings):
    day, run = a_date(), uuid.uuid4().hex[:8]
    for b in range(3):
        land_batch(live_settings, day, run, b * 10, 10)
    proc = compactor_process(live_settings, day, "merged")
    try:
        wait_for(lambda: paused(live_settings, "merged").exists(), 60, 0.2, what="the compactor at 'merged'")
        land_batch(live_settings, day, run, 30, 10)  # lands in the old generation, after the listing
        (live_settings.home_path / "run" / "compact-continue-merged").touch()
        assert proc.wait(60) == 0
    finally:
        proc.kill()
        paused(live_settings, "merged").unlink(missing_ok=True)
        (live_settings.home_path / "run" / "compact-continue-merged").unlink(missing_ok=True)
    assert ids(live_settings, day) == sorted(f"{run}-{i}" for i in range(40))
    names = files(live_settings, day)
    # the merged file, the batch that landed meanwhile, and maybe the last batch before it (not
    # committed yet when the compactor looked: carried as it was)
    assert len([n for n in names if n.startswith("c-")]) == 1 and 2 <= len(names) <= 3, names
    land_batch(live_settings, day, run, 40, 10)  # and the sink lands into the new generation
    assert ids(live_settings, day) == sorted(f"{run}-{i}" for i in range(50))


@pytest.mark.parametrize("step", STEPS)
def test_kill_9_at_any_step_then_a_rerun_leaves_every_row_once(live_settings, step):
    day, run = a_date(), uuid.uuid4().hex[:8]
    for b in range(3):
        land_batch(live_settings, day, run, b * 10, 10)
    expected = sorted(f"{run}-{i}" for i in range(30))
    proc = compactor_process(live_settings, day, step)
    try:
        wait_for(lambda: paused(live_settings, step).exists(), 60, 0.2, what=f"the compactor at {step!r}")
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)
    finally:
        proc.kill()
        paused(live_settings, step).unlink(missing_ok=True)
    assert ids(live_settings, day) == expected
    # the sink still lands (a lock the killed compactor held expires), and a rerun finishes the work
    land_batch(live_settings, day, run, 30, 10)
    committed(live_settings, day)
    c = Compactor(live_settings)
    # the killed compactor's own lock expires too (3 x QUESTLOG_COMPACT_LOCK_S)
    assert [r.done for r in c.run([TABLE], [f"{day:%Y-%m-%d}"], wait_for_lock_s=60)] == [True]
    c.cleanup(TABLE, [f"{day:%Y-%m-%d}"], grace_s=0)
    assert ids(live_settings, day) == sorted(f"{run}-{i}" for i in range(40))
    names = files(live_settings, day)
    assert len(names) == 1 and names[0].startswith("c-"), names
    gens = Hdfs(live_settings).list(f"{c.table_dir(TABLE)}/_gen/dt={day:%Y-%m-%d}")
    assert len(gens) == 1, gens  # orphans and old generations are gone


def test_old_files_without_a_new_column_read_null_after_compaction(live_settings):
    """Schema evolution across compacted and new files: a file of an older schema (no `rarity`)
    merged with newer ones reads NULL there, the newer rows keep theirs."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    day, run = a_date(), uuid.uuid4().hex[:8]
    d = f"{day:%Y-%m-%d}"
    for i in range(2):  # two batches of the current schema, through the sink (which registers the date)
        event = {
            "event_id": f"{run}-{i}",
            "event_type": "purchase_sword",
            "received_at": day.isoformat(),
            "sword_type": "katana",
            "rarity": "epic",
            "price": 2.0,
        }
        produce(live_settings, live_settings.topic_for("purchase_sword"), [json.dumps(event).encode()])
        wait_for(lambda i=i: count(live_settings, day) >= i + 1, 120, 0.5, what=f"row {i}")
    # beside them, a file an older checkpoint (another run) wrote before `rarity` existed
    old = pa.table(
        {
            "event_id": [f"{run}-old"],
            "event_type": ["purchase_sword"],
            "received_at": pa.array([day.replace(tzinfo=None)], pa.timestamp("us", tz="UTC")),
            "sword_type": ["axe"],
            "price": [1.0],
        }
    )
    buf = io.BytesIO()
    pq.write_table(old, buf)
    c = Compactor(live_settings)
    location = path_of(c.partition_meta(TABLE, d)["externalLocation"])
    c.fs.write(f"{location}/part-01dc0de0-b000000000001-0000.parquet", buf.getvalue())
    committed(live_settings, day)
    assert [r.done for r in c.run([TABLE], [d])] == [True]
    assert len(files(live_settings, day)) == 1
    rows = query(live_settings, f"SELECT event_id, rarity, sword_type FROM {TABLE} WHERE dt = '{d}' ORDER BY event_id")
    assert rows == [[f"{run}-0", "epic", "katana"], [f"{run}-1", "epic", "katana"], [f"{run}-old", None, "axe"]]
