"""Table maintenance with Iceberg's own procedures, run through Trino: `questlog compact` and the
`compactor` service.

* Compaction: a date partition's small data files are rewritten into files near
  QUESTLOG_COMPACT_TARGET_MB by Trino's ``ALTER TABLE ... EXECUTE optimize WHERE dt = ...``, one
  Iceberg commit (a `replace` snapshot). A reader sees the snapshot before it or the one after,
  each with every row once; the sink keeps appending meanwhile (an append and a rewrite of other
  files do not conflict: Iceberg retries the later commit on the new metadata).
* Snapshot expiry: ``expire_snapshots`` drops snapshots older than QUESTLOG_COMPACT_GRACE_S (and the
  metadata and data files only they named), so the snapshots, manifests and data files of a table
  stay bounded under a commit every 2 s. The sink's latest snapshot is always kept: a batch Spark
  runs again after a crash is recognised by it (spark_sink/tables.py), however long the sink was down.
* Orphan files: ``remove_orphan_files`` deletes files under the table that no snapshot names (what a
  killed writer left), once older than QUESTLOG_ORPHAN_AGE_S, at most once an hour.

The compactor connects as QUESTLOG_COMPACT_TRINO_USER, the only Trino user allowed to change tables
(compose/trino/iceberg-rules.json). Locks, generation directories and hand-edited metastore files
are no longer needed: Iceberg's commits are atomic.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from questlog.catalog import PARTITION_COLUMN
from questlog.settings import Settings
from questlog.sql import execute

log = logging.getLogger(__name__)

ORPHANS_EVERY_S = 3600.0  # remove_orphan_files lists every file of a table: once an hour is enough
MIN_RETENTION_S = 60  # compose/trino/catalog/iceberg.properties: iceberg.*.min-retention=1m


@dataclass
class PartitionReport:
    table: str
    date: str
    files: int  # data files before
    bytes: int
    small: int  # of them below half the target size: what a compaction would rewrite
    done: bool = False
    output_files: int = 0
    note: str = ""

    @property
    def useful(self) -> bool:
        return self.small >= 2


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def optimize_sql(settings: Settings, table: str, date: str, threshold_mb: float) -> str:
    return (
        f"ALTER TABLE {qualified(settings, table)} EXECUTE optimize(file_size_threshold => "
        f"{literal(f'{int(threshold_mb)}MB')}) WHERE {quote(PARTITION_COLUMN)} = {literal(date)}"
    )


def qualified(settings: Settings, table: str) -> str:
    return f"{quote(settings.trino_catalog)}.{quote(settings.trino_schema)}.{quote(table)}"


def expiry_retention_s(grace_s: float, now: float, latest_sink_commit: float | None) -> int:
    """The age beyond which snapshots are expired: the grace period, or more so that the sink's
    latest snapshot (committed at ``latest_sink_commit``) is never expired."""
    keep = grace_s if latest_sink_commit is None else max(grace_s, now - latest_sink_commit + 60)
    return max(MIN_RETENTION_S, int(keep) + 1)


def due_dates(dates: Iterable[str], today: str, done: dict[str, str]) -> list[str]:
    """Dates the background loop looks at this round: today always (it is only compacted when
    enough small files gathered), and each closed day until it was compacted once after it
    closed (``done``: date -> the UTC day it was last compacted on)."""
    out = []
    for d in sorted(dates):
        if d >= today or done.get(d, "") <= d:
            out.append(d)
    return out


class Compactor:
    def __init__(self, settings: Settings, progress: Callable[[str], None] | None = None) -> None:
        self.settings = settings
        self.target_mb = settings.compact_target_mb
        self.progress = progress or (lambda message: log.info("%s", message))

    def _sql(self, statement: str) -> list[list]:
        return execute(self.settings, statement, user=self.settings.compact_trino_user)[1]

    def _meta(self, table: str, kind: str) -> str:
        return f"{quote(self.settings.trino_catalog)}.{quote(self.settings.trino_schema)}.{quote(f'{table}${kind}')}"

    # What a table holds
    def dates(self, table: str) -> list[str]:
        """The table's date partitions that hold data files."""
        rows = self._sql(f"SELECT DISTINCT partition.{quote(PARTITION_COLUMN)} FROM {self._meta(table, 'files')}")
        return sorted(r[0] for r in rows if r[0] is not None)

    def inspect(self, table: str, date: str) -> PartitionReport:
        small = int(self.target_mb * 2**20) // 2
        rows = self._sql(
            f"SELECT count(*), coalesce(sum(file_size_in_bytes), 0), count_if(file_size_in_bytes < {small}) "
            f"FROM {self._meta(table, 'files')} WHERE partition.{quote(PARTITION_COLUMN)} = {literal(date)} "
            "AND content = 0"
        )
        files, size, small_files = rows[0]
        return PartitionReport(table, date, int(files), int(size), int(small_files))

    def snapshots(self, table: str) -> int:
        return int(self._sql(f"SELECT count(*) FROM {self._meta(table, 'snapshots')}")[0][0])

    # Maintenance
    def compact_partition(self, table: str, date: str, min_files: int = 2) -> PartitionReport:
        report = self.inspect(table, date)
        if report.small < max(2, min_files):
            return report
        self.progress(f"{table} dt={date}: rewriting {report.files} files ({report.bytes:,} bytes) with optimize")
        self._sql(optimize_sql(self.settings, table, date, self.target_mb / 2))
        after = self.inspect(table, date)
        report.done, report.output_files = True, after.files
        self.progress(f"{table} dt={date}: {report.files} files -> {after.files}")
        return report

    def expire(self, table: str, grace_s: float | None = None, sink_committed_batch: int | None = None) -> int:
        """Expire the table's snapshots older than the grace period, the sink's latest kept (unless
        its batch is at most ``sink_committed_batch``, the last one the sink's checkpoint recorded:
        then no restart runs it again); the retention used (seconds)."""
        grace_s = self.settings.compact_grace_s if grace_s is None else grace_s
        rows = self._sql(
            f"SELECT to_unixtime(committed_at), CAST(element_at(summary, 'questlog.batch') AS bigint) "
            f"FROM {self._meta(table, 'snapshots')} "
            "WHERE element_at(summary, 'questlog.checkpoint') IS NOT NULL ORDER BY committed_at DESC LIMIT 1"
        )
        latest = rows[0][0] if rows else None
        if rows and sink_committed_batch is not None and rows[0][1] is not None and rows[0][1] <= sink_committed_batch:
            latest = None
        retention = expiry_retention_s(grace_s, time.time(), latest)
        self._sql(
            f"ALTER TABLE {qualified(self.settings, table)} EXECUTE expire_snapshots(retention_threshold => "
            f"{literal(f'{retention}s')})"
        )
        return retention

    def remove_orphans(self, table: str, age_s: float | None = None) -> None:
        age = max(MIN_RETENTION_S, int(self.settings.orphan_age_s if age_s is None else age_s))
        self._sql(
            f"ALTER TABLE {qualified(self.settings, table)} EXECUTE remove_orphan_files(retention_threshold => "
            f"{literal(f'{age}s')})"
        )

    def retention(self, table: str, days: int, today: str | None = None) -> dict[str, int]:
        """Delete the table's days older than ``days`` before ``today`` (a day ``d`` is kept while
        ``d >= today - days``), then rewrite the files those deletes left; {date: rows deleted}.
        Whole date partitions: Trino drops their files from the table without reading them; the
        files leave HDFS with the next snapshot expiry after QUESTLOG_COMPACT_GRACE_S."""
        cutoff = retention_cutoff(today or today_utc(), days)
        where = f"{quote(PARTITION_COLUMN)} < {literal(cutoff)}"
        rows = self._sql(
            f"SELECT {quote(PARTITION_COLUMN)}, count(*) FROM {qualified(self.settings, table)} WHERE {where} GROUP BY 1"
        )
        if rows:
            self._sql(f"DELETE FROM {qualified(self.settings, table)} WHERE {where}")
            self.progress(f"{table}: retention {days} days: {len(rows)} days before {cutoff} deleted")
        return {r[0]: int(r[1]) for r in rows}

    def run(
        self,
        tables: Iterable[str],
        dates: Iterable[str] | None = None,
        min_files: int = 2,
        dry_run: bool = False,
        expire: bool = True,
    ) -> list[PartitionReport]:
        """Compact (or with ``dry_run`` only inspect) every date of ``tables`` (``dates``: only
        those), then expire each table's old snapshots. A table not created yet is skipped."""
        reports = []
        for table in tables:
            try:
                known = self.dates(table)
            except Exception as exc:
                if "does not exist" in str(exc) or "TABLE_NOT_FOUND" in str(exc):
                    self.progress(f"{table}: no table yet")
                    continue
                raise
            wanted = known if dates is None else sorted(set(dates) & set(known))
            for date in wanted:
                reports.append(self.inspect(table, date) if dry_run else self.compact_partition(table, date, min_files))
            if expire and not dry_run:
                self.expire(table)
        return reports


def retention_cutoff(today: str, days: int) -> str:
    """The oldest day kept with ``days`` of retention on ``today`` (YYYY-MM-DD)."""
    return (datetime.strptime(today, "%Y-%m-%d") - timedelta(days=days)).strftime("%Y-%m-%d")


def retention_days(settings: Settings, catalog) -> dict[str, int]:
    """{table: days} of every table with a retention: the catalog's types (``retention_days``),
    the dead letters and the sessions (their settings; 0 keeps forever)."""
    from questlog.catalog import DEAD_LETTER_TABLE, SESSIONS_TABLE

    out = {et.table: et.retention_days for et in catalog if et.retention_days}
    if settings.dead_letters_retention_days > 0:
        out[DEAD_LETTER_TABLE] = settings.dead_letters_retention_days
    if settings.sessions_retention_days > 0:
        out[SESSIONS_TABLE] = settings.sessions_retention_days
    return out


def today_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def loop(settings: Settings, stopping: Callable[[], bool], interval_s: float | None = None) -> None:
    """The compactor service: every interval, today's partition of every catalog table (when at
    least QUESTLOG_COMPACT_MIN_FILES small files gathered) and each closed day once after midnight
    UTC, then snapshot expiry; orphan files once an hour."""
    from compactor.erasure import Busy, Eraser
    from questlog.catalog.watch import CatalogSource

    interval_s = settings.compact_interval_s if interval_s is None else interval_s
    compactor = Compactor(settings)
    source = CatalogSource(settings.catalog)
    eraser = Eraser(settings, lambda: source.get().tables(settings.raw_topic, settings.dlq_topic))
    done: dict[tuple[str, str], str] = {}
    orphans_at = 0.0
    maintenance_at = 0.0
    expired_days: dict[str, float] = {}  # table -> when retention last deleted days of it
    while not stopping():
        # forget requests every QUESTLOG_FORGET_INTERVAL_S; the rest every QUESTLOG_COMPACT_INTERVAL_S
        try:
            if eraser.store.open():
                eraser.run_once()
        except Busy:
            pass  # `questlog forget --now` is at it
        except Exception:
            log.exception("erasing forgotten players failed; trying again next round")
        if time.monotonic() < maintenance_at:
            _sleep(min(settings.forget_interval_s, maintenance_at - time.monotonic()), stopping)
            continue
        maintenance_at = time.monotonic() + interval_s
        try:
            catalog = source.get()
            tables = [t.name for t in catalog.tables(settings.raw_topic, settings.dlq_topic)]
            today = today_utc()
            for table, days in retention_days(settings, catalog).items():
                try:
                    if compactor.retention(table, days, today):
                        eraser.rewrite_deleted(table)
                        expired_days[table] = time.time()
                except Exception as exc:
                    if "does not exist" not in str(exc):
                        raise
            for table, at in list(expired_days.items()):
                # the days' files, once their snapshots expired (below, last round): the removal
                # only the current snapshot records is swept as orphans
                if time.time() > at + settings.compact_grace_s + interval_s:
                    compactor.remove_orphans(table, settings.compact_grace_s)
                    del expired_days[table]
            sweep = time.monotonic() >= orphans_at
            for table in tables:
                try:
                    known = compactor.dates(table)
                except Exception as exc:
                    if "does not exist" in str(exc):
                        continue  # the sink has not created it yet
                    raise
                dates = due_dates(known, today, {d: day for (t, d), day in done.items() if t == table})
                # today only once enough small files gathered; a closed day once, whatever it holds
                compactor.run([table], [d for d in dates if d >= today], settings.compact_min_files, expire=False)
                closed = [d for d in dates if d < today]
                if closed:
                    compactor.run([table], closed, min_files=2, expire=False)
                for d in closed:
                    done[(table, d)] = today
                compactor.expire(table)
                if sweep:
                    compactor.remove_orphans(table)
            if sweep:
                orphans_at = time.monotonic() + ORPHANS_EVERY_S
        except Exception:
            log.exception("maintenance round failed; trying again next round")
        _sleep(min(settings.forget_interval_s, interval_s), stopping)


def _sleep(seconds: float, stopping: Callable[[], bool]) -> None:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not stopping():
        time.sleep(0.5)


def main() -> int:
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    stop = {"now": False}
    signal.signal(signal.SIGTERM, lambda *a: stop.update(now=True))
    signal.signal(signal.SIGINT, lambda *a: stop.update(now=True))
    ready = settings.home_path / "run" / "compactor.ready"
    ready.parent.mkdir(parents=True, exist_ok=True)
    ready.write_text(str(time.time()))
    try:
        loop(settings, lambda: stop["now"])
    finally:
        ready.unlink(missing_ok=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
