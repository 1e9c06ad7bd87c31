"""Compaction: each date partition's small parquet files merged into files near a target size,
without a reader ever seeing a wrong count (`questlog compact`, and the `compactor` service).

How it stays correct (README "Compaction"):

* Generations. A partition's files live in the directory its metastore entry names (at first
  ``<table>/dt=D``, where the sink registers it). A compaction writes the merged files, and a copy
  of every file it does not merge, into a NEW directory ``<table>/_gen/dt=D/g<ms>/`` that no query
  reads, then points the partition at it with ONE atomic step: the file metastore's partition file
  (``<metastore>/<schema>/<table>/dt=D/.trinoSchema``, JSON) is written whole beside and renamed
  over the old one (WebHDFS RENAME with ``renameoptions=OVERWRITE``, atomic on the NameNode).
  Trino reads that file per query (``hive.metastore-cache-ttl=0s``): a query sees the old
  directory or the new one, never both or neither. The old directory is deleted after
  QUESTLOG_COMPACT_GRACE_S, so queries that listed it just before the switch still read it.
* The sink lands into the partition's CURRENT directory, and reads it under a per-table lock
  (``<table>/_compact/publish.lock``, created exclusively on HDFS, expiring after
  QUESTLOG_COMPACT_LOCK_S so a killed holder blocks nobody for long). The compactor holds the same
  lock only for its final step: copy the files that appeared in the old directory since it listed
  it, drop the copies of carried files a re-run batch deleted, switch.
* Only files of batches the sink can never run again are merged: of another checkpoint (run), or
  of a batch at or below the checkpoint's last commit. Newer files are carried over unchanged, so a
  re-run batch still finds (and deletes) its own files by name in the current directory.
* Crash safety: until the switch, the new directory is an orphan nobody reads; after it, the old
  one is. A later run deletes generations that are not current once they are older than the grace
  period. One compactor per table at a time (``<table>/_compact/compactor.lock``).
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import time
import urllib.parse
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime

import requests

from questlog.catalog import PARTITION_COLUMN
from questlog.settings import Settings

log = logging.getLogger(__name__)

# The file metastore's directory (compose/trino/catalog/hive.properties: hive.metastore.catalog.dir).
METASTORE_DIR = "/questlog/metastore"
SCHEMA_FILE = ".trinoSchema"
GEN_DIR = "_gen"
LOCK_DIR = "_compact"
PUBLISH_LOCK = "publish.lock"
COMPACTOR_LOCK = "compactor.lock"
PART_RE = re.compile(r"^part-(?P<run>[0-9a-f]+)-b(?P<batch>\d{12})-\d+\.parquet$")
# Test hook: pause at this named step, after writing <home>/run/compact-paused-<step>, until
# <home>/run/compact-continue-<step> exists (or the test kills the process there).
PAUSE_ENV = "QUESTLOG_COMPACT_PAUSE_AT"
STEPS = ("listed", "merged", "locked", "switched")
READERS = 8  # files read (or copied) at once over WebHDFS
ROW_GROUP_BYTES = 128 * 2**20  # rows held in memory (Arrow's size) before they are written as one row group


# Planning (pure) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class FileInfo:
    name: str
    size: int


@dataclass
class Plan:
    groups: list[list[FileInfo]] = field(default_factory=list)  # each becomes one merged file
    carry: list[FileInfo] = field(default_factory=list)  # copied into the new generation as they are

    @property
    def merged_files(self) -> int:
        return sum(len(g) for g in self.groups)

    @property
    def useful(self) -> bool:
        return bool(self.groups)


def mergeable(name: str, run: str | None, last_commit: int | None) -> bool:
    """Whether the sink can never run the batch that wrote ``name`` again: a file of another
    checkpoint, a committed batch's file, or a file compaction wrote. Anything else (a name this
    code does not know, a batch that may be re-run) is carried over untouched."""
    if name.startswith("c-") and name.endswith(".parquet"):
        return True
    m = PART_RE.match(name)
    if not m:
        return False
    if m["run"] != run:
        return True
    return last_commit is not None and int(m["batch"]) <= last_commit


def plan_partition(
    files: Iterable[FileInfo], target_bytes: int, run: str | None, last_commit: int | None, min_files: int = 2
) -> Plan:
    """Which files to merge into which output file. Mergeable files below half the target are
    packed, in name order (so in landing order), into groups of up to ``target_bytes``; a group of
    one file would only be a copy and is carried instead. Nothing is merged unless at least
    ``min_files`` small files can be."""
    plan = Plan()
    small = []
    for f in sorted(files, key=lambda f: f.name):
        if f.size < target_bytes // 2 and mergeable(f.name, run, last_commit):
            small.append(f)
        else:
            plan.carry.append(f)
    if len(small) < min_files:
        plan.carry = sorted(plan.carry + small, key=lambda f: f.name)
        return plan
    group: list[FileInfo] = []
    total = 0
    for f in small:
        if group and total + f.size > target_bytes:
            plan.groups.append(group)
            group, total = [], 0
        group.append(f)
        total += f.size
    if group:
        plan.groups.append(group)
    singles = [g[0] for g in plan.groups if len(g) == 1]
    plan.groups = [g for g in plan.groups if len(g) > 1]
    plan.carry = sorted(plan.carry + singles, key=lambda f: f.name)
    return plan


def due_dates(dates: Iterable[str], today: str, done: dict[str, str]) -> list[str]:
    """Dates the background loop looks at this round: today always (it is only compacted when
    enough small files gathered), and each closed day until it was compacted once after it
    closed (``done``: date -> the UTC day it was last compacted on)."""
    out = []
    for d in sorted(dates):
        if d >= today or done.get(d, "") <= d:
            out.append(d)
    return out


# HDFS over WebHDFS ----------------------------------------------------------------------------


class Hdfs:
    """The few WebHDFS calls compaction needs (the `hdfs` package, plus RENAME with overwrite)."""

    def __init__(self, settings: Settings, timeout: float = 60.0) -> None:
        from hdfs import InsecureClient

        self.settings = settings
        self.user = os.environ.get("HADOOP_USER_NAME") or "questlog"
        self.client = InsecureClient(settings.webhdfs_url, user=self.user, timeout=timeout)

    def list(self, path: str) -> list[tuple[str, dict]]:
        from hdfs.util import HdfsError

        try:
            return self.client.list(path, status=True)
        except HdfsError as exc:
            if "does not exist" in str(exc):
                return []
            raise

    def status(self, path: str) -> dict | None:
        return self.client.status(path, strict=False)

    def read(self, path: str) -> bytes:
        with self.client.read(path) as reader:
            return reader.read()

    def write(self, path: str, data: bytes, overwrite: bool = False) -> None:
        self.client.write(path, data=data, overwrite=overwrite)

    def create_exclusive(self, path: str, data: bytes) -> bool:
        from hdfs.util import HdfsError

        try:
            self.client.write(path, data=data, overwrite=False)
            return True
        except HdfsError as exc:
            if "already exists" in str(exc) or "FileAlreadyExists" in str(exc):
                return False
            raise

    def delete(self, path: str, recursive: bool = False) -> bool:
        return self.client.delete(path, recursive=recursive)

    def touch(self, path: str) -> None:
        self.client.set_times(path, modification_time=int(time.time() * 1000))

    def makedirs(self, path: str) -> None:
        self.client.makedirs(path)

    def rename_over(self, src: str, dst: str) -> None:
        """Rename ``src`` to ``dst``, replacing ``dst`` in one NameNode operation."""
        url = (
            f"{self.settings.webhdfs_url.rstrip('/')}/webhdfs/v1{urllib.parse.quote(src)}?op=RENAME"
            f"&destination={urllib.parse.quote(dst)}&renameoptions=OVERWRITE&user.name={self.user}"
        )
        response = requests.put(url, timeout=30)
        if response.status_code != 200:
            raise OSError(f"rename {src} -> {dst}: HTTP {response.status_code} {response.text[:300]}")


def path_of(url: str) -> str:
    """The path of an hdfs:// URL (or a path)."""
    return urllib.parse.urlparse(url).path if "://" in url else url


# Locks -----------------------------------------------------------------------------------------


class Lock:
    """An exclusive lock file on HDFS (the NameNode makes an exclusive create atomic) that expires
    ``expiry_s`` after its last refresh, so a holder killed with -9 blocks others only that long."""

    def __init__(self, fs: Hdfs, path: str, expiry_s: float, owner: str) -> None:
        self.fs, self.path, self.expiry_s, self.owner = fs, path, expiry_s, owner
        self.acquired_at: float | None = None

    def try_acquire(self) -> bool:
        if self.fs.create_exclusive(self.path, self.owner.encode()):
            self.acquired_at = time.monotonic()
            return True
        st = self.fs.status(self.path)
        if st is not None and time.time() * 1000 - st["modificationTime"] > self.expiry_s * 1000:
            stale = f"{self.path}.stale-{uuid.uuid4().hex[:8]}"
            try:
                self.fs.client.rename(self.path, stale)
                self.fs.delete(stale)
                log.warning("broke the expired lock %s", self.path)
            except Exception:  # someone else broke it first
                pass
        return False

    def acquire(self, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while True:
            if self.try_acquire():
                return True
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.1)

    def refresh(self) -> None:
        self.fs.touch(self.path)

    def held_for(self) -> float:
        return time.monotonic() - (self.acquired_at or time.monotonic())

    def release(self) -> None:
        if self.acquired_at is not None:
            self.fs.delete(self.path)
            self.acquired_at = None


# The compactor ---------------------------------------------------------------------------------


@dataclass
class PartitionReport:
    table: str
    date: str
    location: str
    files: int
    bytes: int
    plan: Plan
    done: bool = False
    output_files: int = 0
    note: str = ""


def pause_at(settings: Settings, step: str) -> None:
    """The tests' hook: with QUESTLOG_COMPACT_PAUSE_AT=<step>, wait here until told to go on
    (or killed)."""
    if os.environ.get(PAUSE_ENV) == step:
        marker = settings.home_path / "run" / f"compact-paused-{step}"
        go_on = settings.home_path / "run" / f"compact-continue-{step}"
        marker.parent.mkdir(parents=True, exist_ok=True)
        marker.write_text(str(os.getpid()))
        while not go_on.exists():
            time.sleep(0.2)


class Compactor:
    def __init__(
        self, settings: Settings, fs: Hdfs | None = None, progress: Callable[[str], None] | None = None
    ) -> None:
        self.settings = settings
        self.fs = fs or Hdfs(settings)
        self.target_bytes = int(settings.compact_target_mb * 2**20)
        self.progress = progress or (lambda message: log.info("%s", message))

    holding: Lock | None = None  # the table's compactor lock while run() holds it

    def _refresh(self) -> None:
        """Keep the compactor lock from expiring while the work goes on."""
        if self.holding is not None and self.holding.acquired_at is not None:
            self.holding.refresh()

    # Paths
    def table_dir(self, table: str) -> str:
        return f"{self.settings.warehouse_dir.rstrip('/')}/{table}"

    def schema_file(self, table: str, date: str) -> str:
        return f"{METASTORE_DIR}/{self.settings.trino_schema}/{table}/{PARTITION_COLUMN}={date}/{SCHEMA_FILE}"

    def lock(self, table: str, name: str, expiry_s: float | None = None) -> Lock:
        return Lock(
            self.fs,
            f"{self.table_dir(table)}/{LOCK_DIR}/{name}",
            expiry_s or self.settings.compact_lock_s,
            f"compactor {os.getpid()} {time.time():.0f}",
        )

    # Metastore
    def partition_meta(self, table: str, date: str) -> dict | None:
        from hdfs.util import HdfsError

        try:
            return json.loads(self.fs.read(self.schema_file(table, date)))
        except HdfsError as exc:
            if "does not exist" in str(exc) or "not found" in str(exc).lower():
                return None
            raise

    def dates(self, table: str) -> list[str]:
        """The table's registered date partitions."""
        root = f"{METASTORE_DIR}/{self.settings.trino_schema}/{table}"
        prefix = PARTITION_COLUMN + "="
        return sorted(
            name[len(prefix) :]
            for name, st in self.fs.list(root)
            if st["type"] == "DIRECTORY" and name.startswith(prefix)
        )

    def switch(self, table: str, date: str, meta: dict, new_location: str) -> None:
        """Point the partition at ``new_location``: the whole file written beside, renamed over."""
        meta = dict(meta, externalLocation=new_location)
        tmp = f"{self.table_dir(table)}/{LOCK_DIR}/{PARTITION_COLUMN}={date}.trinoSchema.tmp"
        self.fs.write(tmp, json.dumps(meta).encode(), overwrite=True)
        self.fs.rename_over(tmp, self.schema_file(table, date))

    # The sink's checkpoint
    def sink_progress(self) -> tuple[str | None, int | None]:
        """(run id, last committed batch) of the sink's checkpoint."""
        root = self.settings.sink_checkpoint_dir
        try:
            run = json.loads(self.fs.read(f"{root}/metadata").decode().splitlines()[0])["id"].split("-")[0]
        except Exception:
            return None, None
        commits = [int(n) for n, _ in self.fs.list(f"{root}/commits") if n.isdigit()]
        return run, (max(commits) if commits else None)

    def files(self, location: str) -> list[FileInfo]:
        return [
            FileInfo(n, st["length"])
            for n, st in self.fs.list(path_of(location))
            if st["type"] == "FILE" and n.endswith(".parquet") and not n.startswith((".", "_"))
        ]

    # One partition
    def inspect(
        self, table: str, date: str, run: str | None, last_commit: int | None, min_files: int = 2
    ) -> PartitionReport | None:
        meta = self.partition_meta(table, date)
        if meta is None:
            return None
        location = meta.get("externalLocation") or f"{self.settings.warehouse_url}/{table}/{PARTITION_COLUMN}={date}"
        files = self.files(location)
        return PartitionReport(
            table,
            date,
            location,
            len(files),
            sum(f.size for f in files),
            plan_partition(files, self.target_bytes, run, last_commit, min_files),
        )

    def compact_partition(self, table: str, date: str, min_files: int = 2) -> PartitionReport | None:
        run, last_commit = self.sink_progress()
        report = self.inspect(table, date, run, last_commit, min_files)
        if report is None or not report.plan.useful:
            return report
        old = path_of(report.location)
        listed = {f.name for f in report.plan.carry} | {f.name for g in report.plan.groups for f in g}
        pause_at(self.settings, "listed")
        gen = f"{self.table_dir(table)}/{GEN_DIR}/{PARTITION_COLUMN}={date}/g{int(time.time() * 1000)}"
        self.fs.makedirs(gen)
        with ThreadPoolExecutor(max_workers=READERS) as pool:  # WebHDFS reads are latency-bound
            for k, group in enumerate(report.plan.groups):
                self.progress(
                    f"{table} dt={date}: merging {len(group)} files "
                    f"({sum(f.size for f in group):,} bytes) into {gen}/c-{k:04d}.parquet"
                )
                parts = list(pool.map(lambda f: self.fs.read(f"{old}/{f.name}"), group))
                self.fs.write(f"{gen}/c-{k:04d}.parquet", merge(parts))
                self._refresh()
            for _ in pool.map(
                lambda f: self.fs.write(f"{gen}/{f.name}", self.fs.read(f"{old}/{f.name}")), report.plan.carry
            ):
                self._refresh()
        pause_at(self.settings, "merged")
        publish = self.lock(table, PUBLISH_LOCK)
        if not publish.acquire(timeout_s=self.settings.compact_lock_s * 2):
            report.note = "the sink's lock was not free; left for the next round"
            self.fs.delete(gen, recursive=True)
            return report
        try:
            now = {f.name: f for f in self.files(old)}
            merged = {f.name for g in report.plan.groups for f in g}
            if merged - set(now):
                raise RuntimeError(
                    f"{table} dt={date}: merged files vanished from {old}: {sorted(merged - set(now))[:5]}"
                )
            for f in report.plan.carry:
                if f.name not in now:  # a re-run batch deleted its earlier attempt
                    self.fs.delete(f"{gen}/{f.name}")
            for name in sorted(set(now) - listed):  # landed while we merged
                self.fs.write(f"{gen}/{name}", self.fs.read(f"{old}/{name}"))
            pause_at(self.settings, "locked")
            if publish.held_for() > self.settings.compact_lock_s / 2:
                raise RuntimeError(f"{table} dt={date}: the final step took too long to trust the lock")
            self.fs.touch(old)  # its grace period starts now (it is current until the next line)
            meta = self.partition_meta(table, date)
            if meta is None:
                raise RuntimeError(f"{table} dt={date}: the partition was unregistered while it was compacted")
            self.switch(table, date, meta, self.settings.hdfs_url.rstrip("/") + gen)
            pause_at(self.settings, "switched")
        finally:
            publish.release()
        report.done = True
        report.output_files = len(self.files(gen))
        self.progress(f"{table} dt={date}: {report.files} files -> {report.output_files} in {gen}")
        return report

    def cleanup(self, table: str, dates: Iterable[str] | None = None, grace_s: float | None = None) -> list[str]:
        """Delete generations of ``table`` that are not current and older than the grace period
        (old ones once queries that listed them are done, orphans of a crashed run). Returns them."""
        grace_s = self.settings.compact_grace_s if grace_s is None else grace_s
        deleted = []
        gen_root = f"{self.table_dir(table)}/{GEN_DIR}"
        gen_dates = {
            n.split("=", 1)[1]
            for n, st in self.fs.list(gen_root)
            if st["type"] == "DIRECTORY" and n.startswith(PARTITION_COLUMN + "=")
        }
        for date in sorted(gen_dates if dates is None else set(dates) & gen_dates):
            meta = self.partition_meta(table, date)
            if meta is None:
                continue
            current = path_of(meta.get("externalLocation") or f"{self.table_dir(table)}/{PARTITION_COLUMN}={date}")
            candidates = [
                f"{gen_root}/{PARTITION_COLUMN}={date}/{n}"
                for n, st in self.fs.list(f"{gen_root}/{PARTITION_COLUMN}={date}")
                if st["type"] == "DIRECTORY"
            ]
            candidates.append(f"{self.table_dir(table)}/{PARTITION_COLUMN}={date}")
            for path in candidates:
                if path.rstrip("/") == current.rstrip("/"):
                    continue
                st = self.fs.status(path)
                if st is None or time.time() * 1000 - st["modificationTime"] < grace_s * 1000:
                    continue
                self.fs.delete(path, recursive=True)
                deleted.append(path)
                self.progress(f"{table}: deleted the old generation {path}")
        return deleted

    def run(
        self,
        tables: Iterable[str],
        dates: Iterable[str] | None = None,
        min_files: int = 2,
        dry_run: bool = False,
        wait_for_lock_s: float = 0.0,
    ) -> list[PartitionReport]:
        """Compact (or with ``dry_run`` only plan) every partition of ``tables`` (``dates``: only
        those). A table another compactor works on is skipped after ``wait_for_lock_s``."""
        reports = []
        run, last_commit = self.sink_progress()
        for table in tables:
            wanted = self.dates(table) if dates is None else sorted(set(dates) & set(self.dates(table)))
            if dry_run:
                reports += [r for d in wanted if (r := self.inspect(table, d, run, last_commit, min_files))]
                continue
            lock = self.lock(table, COMPACTOR_LOCK, expiry_s=3 * self.settings.compact_lock_s)
            self.holding = lock
            if not lock.acquire(wait_for_lock_s):
                self.progress(f"{table}: another compactor is at work; skipped")
                continue
            try:
                self.cleanup(table, wanted)
                for date in wanted:
                    report = self.compact_partition(table, date, min_files)
                    lock.refresh()
                    if report is not None:
                        reports.append(report)
                self.cleanup(table, wanted)
            finally:
                lock.release()
        return reports


def merge(parts: list[bytes]) -> bytes:
    """One parquet file of the rows of ``parts``, in order. Columns are the union of theirs (a file
    of an older schema reads NULL for a newer column); timestamps stay INT64 microseconds."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    tables = [pq.read_table(io.BytesIO(p)) for p in parts]
    schema = pa.unify_schemas([t.schema for t in tables], promote_options="permissive")
    schema = schema.remove_metadata()
    out = io.BytesIO()
    buffered: list = []
    with pq.ParquetWriter(
        out,
        schema,
        compression="snappy",
        coerce_timestamps="us",
        allow_truncated_timestamps=False,
        use_deprecated_int96_timestamps=False,
    ) as writer:

        def flush() -> None:
            # row groups as large as Spark's (not one per small input file: Trino reads and
            # compresses large ones far better)
            if buffered:
                group = pa.concat_tables(buffered)
                writer.write_table(group, row_group_size=max(1, group.num_rows))
                buffered.clear()

        for t in tables:
            for name in schema.names:
                if name not in t.schema.names:
                    t = t.append_column(name, pa.nulls(t.num_rows, schema.field(name).type))
            buffered.append(t.select(schema.names).cast(schema))
            if sum(b.nbytes for b in buffered) >= ROW_GROUP_BYTES:
                flush()
        flush()
    return out.getvalue()


def today_utc() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%d")


def loop(settings: Settings, stopping: Callable[[], bool], interval_s: float | None = None) -> None:
    """The compactor service: every interval, today's partitions of every catalog table (when at
    least QUESTLOG_COMPACT_MIN_FILES small files gathered), and each closed day once after midnight UTC."""
    from questlog.catalog.watch import CatalogSource

    interval_s = settings.compact_interval_s if interval_s is None else interval_s
    compactor = Compactor(settings)
    source = CatalogSource(settings.catalog)
    done: dict[tuple[str, str], str] = {}
    while not stopping():
        try:
            tables = [t.name for t in source.get().tables(settings.raw_topic, settings.dlq_topic)]
            today = today_utc()
            for table in tables:
                dates = due_dates(compactor.dates(table), today, {d: day for (t, d), day in done.items() if t == table})
                # today only once enough small files gathered; a closed day once, whatever it holds
                compactor.run([table], [d for d in dates if d >= today], min_files=settings.compact_min_files)
                closed = [d for d in dates if d < today]
                if closed:
                    compactor.run([table], closed, min_files=2)
                for d in closed:
                    done[(table, d)] = today
        except Exception:
            log.exception("compaction round failed; trying again next round")
        deadline = time.monotonic() + interval_s
        while time.monotonic() < deadline and not stopping():
            time.sleep(0.5)


def main() -> int:
    import signal

    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    logging.getLogger("hdfs").setLevel(logging.WARNING)  # a line per WebHDFS call otherwise
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
