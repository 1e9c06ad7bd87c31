"""Compaction's decisions and SQL, without services (compactor/compact.py)."""

from compactor.compact import PartitionReport, due_dates, expiry_retention_s, optimize_sql
from questlog.settings import Settings


def test_today_always_and_a_closed_day_until_it_was_compacted_after_it_closed():
    dates = ["2026-11-27", "2026-11-28", "2026-11-29"]
    assert due_dates(dates, "2026-11-29", {}) == dates
    done = {"2026-11-27": "2026-11-28", "2026-11-28": "2026-11-28", "2026-11-29": "2026-11-29"}
    assert due_dates(dates, "2026-11-29", done) == ["2026-11-28", "2026-11-29"]


def test_expiry_keeps_the_grace_period_and_always_the_sinks_latest_snapshot():
    now = 1_000_000.0
    assert expiry_retention_s(600, now, now - 5) == 601  # the sink committed 5 s ago: the grace period rules
    # the sink was down for a day: its last snapshot (which recognises a re-run batch) is kept
    assert expiry_retention_s(600, now, now - 86_400) > 86_400
    assert expiry_retention_s(0, now, None) == 60  # never below Trino's floor (iceberg.properties: 1m)


def test_optimize_rewrites_one_date_partition_with_trinos_procedure():
    sql = optimize_sql(Settings.from_env({}), "sword_purchases", "2026-11-29", 64)
    assert sql == (
        'ALTER TABLE "iceberg"."events"."sword_purchases" EXECUTE optimize(file_size_threshold => \'64MB\') '
        "WHERE \"dt\" = '2026-11-29'"
    )


def test_a_partition_is_worth_compacting_from_two_small_files():
    assert not PartitionReport("t", "2026-11-29", files=5, bytes=10, small=1).useful
    assert PartitionReport("t", "2026-11-29", files=5, bytes=10, small=2).useful
