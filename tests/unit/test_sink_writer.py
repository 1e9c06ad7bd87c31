"""Batch-idempotent writes (spark_sink.writer) on a local SparkSession and the local file system:
a batch Spark runs again replaces its files, a new batch adds its own, nothing is left staged."""

import datetime as dt

import pytest

from spark_sink.writer import batch_prefix, write_batch
from tests.unit.test_transform import spark  # noqa: F401  (the session's one local SparkSession)


def rows(spark, *items):  # noqa: F811
    return spark.createDataFrame(
        [(event_id, ts, ts.strftime("%Y-%m-%d")) for event_id, ts in items],
        "event_id string, received_at timestamp, dt string",
    )


def table(spark, root):  # noqa: F811
    return sorted((r.event_id, str(r.dt)) for r in spark.read.parquet(str(root)).collect())


def files(root):
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file() and not p.name.startswith("."))


DAY1, DAY2 = dt.datetime(2026, 11, 29, 23, 59), dt.datetime(2026, 11, 30, 0, 1)


def test_a_batch_lands_in_its_date_directories_under_names_of_its_run_and_id(spark, tmp_path):  # noqa: F811
    root = tmp_path / "t"
    assert write_batch(spark, rows(spark, ("a", DAY1), ("b", DAY2)), f"file://{root}", "r1", 7) == [
        "2026-11-29",
        "2026-11-30",
    ]
    assert table(spark, root) == [("a", "2026-11-29"), ("b", "2026-11-30")]
    prefix = batch_prefix("r1", 7)
    assert [f.split("/")[0] for f in files(root)] == ["dt=2026-11-29", "dt=2026-11-30"]
    assert all(f.split("/")[1].startswith(prefix) and f.endswith(".parquet") for f in files(root)), files(root)
    assert not (root / "_staging").exists() or not any((root / "_staging").iterdir())


def test_a_batch_run_again_replaces_what_its_earlier_attempt_moved(spark, tmp_path):  # noqa: F811
    root = tmp_path / "t"
    write_batch(spark, rows(spark, ("a", DAY1), ("b", DAY1), ("c", DAY2)), f"file://{root}", "r1", 3)
    write_batch(spark, rows(spark, ("z", DAY1)), f"file://{root}", "r1", 2)  # an earlier batch: kept
    # Spark runs batch 3 again after a crash (the first batch of the restarted query): its rows replace the first attempt's.
    write_batch(spark, rows(spark, ("a", DAY1), ("b", DAY1), ("c", DAY2)), f"file://{root}", "r1", 3, rerun=True)
    assert table(spark, root) == [("a", "2026-11-29"), ("b", "2026-11-29"), ("c", "2026-11-30"), ("z", "2026-11-29")]


def test_a_batch_run_again_unannounced_fails_instead_of_adding_its_rows_twice(spark, tmp_path):  # noqa: F811
    root = tmp_path / "t"
    write_batch(spark, rows(spark, ("a", DAY1), ("c", DAY2)), f"file://{root}", "r1", 3)
    # Later batches of a running query skip the look-up; were one of them a repeat, its first file
    # would meet the earlier attempt's: the batch fails (and the restarted query replaces it).
    with pytest.raises(IOError, match="could not move"):
        write_batch(spark, rows(spark, ("a", DAY1), ("c", DAY2)), f"file://{root}", "r1", 3, rerun=False)
    assert table(spark, root) == [("a", "2026-11-29"), ("c", "2026-11-30")]


def test_a_new_run_never_touches_the_files_of_an_older_checkpoint(spark, tmp_path):  # noqa: F811
    root = tmp_path / "t"
    write_batch(spark, rows(spark, ("old", DAY1)), f"file://{root}", "r1", 0)
    write_batch(spark, rows(spark, ("new", DAY1)), f"file://{root}", "r2", 0)
    assert table(spark, root) == [("new", "2026-11-29"), ("old", "2026-11-29")]


def test_the_files_counter_counts_a_batch_staged_twice_once(spark, tmp_path):  # noqa: F811
    from spark_sink.metrics import FILES, counting_files
    from spark_sink.writer import publish, stage

    root = tmp_path / "counted"
    before = FILES.labels("counted")._value.get()
    data = rows(spark, ("a", DAY1), ("b", DAY2))
    stage(data.coalesce(1), f"file://{root}", "r1", 0)
    staging = stage(data.coalesce(1), f"file://{root}", "r1", 0)  # staged again (as after repeats)
    counting_files(publish)(spark, f"file://{root}", staging, "r1", 0, False)
    assert FILES.labels("counted")._value.get() - before == 2  # one file per date, moved once
    assert table(spark, root) == [("a", "2026-11-29"), ("b", "2026-11-30")]
