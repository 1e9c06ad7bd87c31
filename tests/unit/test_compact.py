"""Compaction's planning and merging, without services (questlog/compact.py)."""

import io
from datetime import UTC, datetime

import pyarrow as pa
import pyarrow.parquet as pq

from questlog.compact import FileInfo, due_dates, merge, mergeable, plan_partition

MB = 2**20


def part(run, batch, n=0):
    return f"part-{run}-b{batch:012d}-{n:04d}.parquet"


def test_only_files_of_batches_the_sink_cannot_run_again_are_merged():
    assert mergeable(part("aaaa0001", 5), run="aaaa0001", last_commit=5)
    assert not mergeable(part("aaaa0001", 6), run="aaaa0001", last_commit=5)  # may be re-run
    assert not mergeable(part("aaaa0001", 0), run="aaaa0001", last_commit=None)  # nothing committed yet
    assert mergeable(part("bbbb0002", 99), run="aaaa0001", last_commit=5)  # an older checkpoint's
    assert mergeable("c-0003.parquet", run="aaaa0001", last_commit=None)  # compaction's own
    assert not mergeable("something-else.parquet", run="aaaa0001", last_commit=5)


def test_small_files_are_packed_up_to_the_target_in_landing_order_and_the_rest_carried():
    files = [FileInfo(part("a0000001", b), 30 * MB) for b in range(7)]
    files.append(FileInfo(part("a0000001", 7), 1 * MB))  # not committed: carried
    files.append(FileInfo("c-0000.parquet", 100 * MB))  # big already: carried
    plan = plan_partition(files, 128 * MB, run="a0000001", last_commit=6)
    assert [[f.name for f in g] for g in plan.groups] == [
        [part("a0000001", b) for b in range(4)],
        [part("a0000001", b) for b in range(4, 7)],
    ]
    assert [f.name for f in plan.carry] == ["c-0000.parquet", part("a0000001", 7)]
    assert plan.merged_files == 7


def test_nothing_is_done_below_the_minimum_and_a_group_of_one_is_only_carried():
    files = [FileInfo(part("a0000001", b), 1 * MB) for b in range(3)]
    assert not plan_partition(files, 128 * MB, "a0000001", 2, min_files=4).useful
    plan = plan_partition(
        [FileInfo(part("a0000001", 0), 1 * MB), FileInfo(part("a0000001", 1), 60 * MB)], 64 * MB, "a0000001", 2
    )
    assert not plan.useful and len(plan.carry) == 2


def test_today_always_and_a_closed_day_until_it_was_compacted_after_it_closed():
    dates = ["2026-11-27", "2026-11-28", "2026-11-29"]
    assert due_dates(dates, "2026-11-29", {}) == dates
    done = {"2026-11-27": "2026-11-28", "2026-11-28": "2026-11-28", "2026-11-29": "2026-11-29"}
    assert due_dates(dates, "2026-11-29", done) == ["2026-11-28", "2026-11-29"]


def parquet(table):
    buf = io.BytesIO()
    pq.write_table(table, buf)
    return buf.getvalue()


def test_merge_keeps_rows_in_order_and_an_older_schema_reads_null_in_new_columns():
    ts = pa.array([datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC)], pa.timestamp("us", tz="UTC"))
    old = pa.table({"event_id": ["a"], "received_at": ts})
    new = pa.table({"event_id": ["b"], "received_at": ts, "rarity": ["epic"]})
    out = pq.read_table(io.BytesIO(merge([parquet(old), parquet(new)])))
    assert out.column_names == ["event_id", "received_at", "rarity"]
    assert out.to_pydict()["event_id"] == ["a", "b"] and out.to_pydict()["rarity"] == [None, "epic"]
    assert out.schema.field("received_at").type == pa.timestamp("us", tz="UTC")
    meta = pq.read_metadata(io.BytesIO(merge([parquet(old)])))
    assert meta.schema.column(1).physical_type == "INT64"  # not INT96: what Trino reads today


def test_many_small_inputs_become_one_row_group():
    parts = [parquet(pa.table({"event_id": [f"e{i}-{k}" for k in range(10)]})) for i in range(30)]
    meta = pq.read_metadata(io.BytesIO(merge(parts)))
    assert (meta.num_rows, meta.num_row_groups) == (300, 1)
