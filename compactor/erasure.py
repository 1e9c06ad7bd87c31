"""Forgetting players: the compactor's side of `questlog forget` (docs/privacy.md).

For the open requests of ``questlog.privacy.RequestStore``, in one pass:

1. Wait until nothing routed before the requests can still land: the router checks every event
   against the suppression list (it reloads it before each chunk), so once the router's committed
   offsets on the raw topic pass the raw topic's end as it was after the requests were recorded
   (plus QUESTLOG_FORGET_SETTLE_S, for a chunk in flight), the typed topics' ends bound what may
   still hold their events; once the sink's checkpoint passes those, every such event has landed.
2. For every table: the players' rows (their ``user_id``, and their ``source`` when the request
   names one; in the dead letters, the raw payload's ``user_id``) are counted per data file and
   deleted (Trino's DELETE: position deletes), then each date partition that held them is
   rewritten by ``optimize`` with a threshold of one byte: only files with deletes are rewritten,
   so only the files that held their rows. The request becomes ``erased``: its raw player id is
   dropped from its file, only the keyed hash stays.
3. QUESTLOG_FORGET_GRACE_S later, snapshots older than that are expired (also the sink's latest,
   once its checkpoint recorded that batch, so an idle table does not keep the old files alive),
   files of those tables that no snapshot names and older than that are removed (a file whose
   removal only the current snapshot records is not deleted by an expiry), and once none of the
   files that held their rows is on HDFS any more, the request is ``done``.

Every step is idempotent and the request file changes only after a step finished: a process killed
anywhere leaves the request as it was, and the next pass does it again (deleting rows that are
already gone deletes nothing).
"""

from __future__ import annotations

import fcntl
import logging
import time
import urllib.error
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager

import orjson

from compactor.compact import Compactor, literal, qualified, quote
from questlog.catalog import DEAD_LETTER_TABLE, PARTITION_COLUMN, Table
from questlog.checkpoint import sink_progress, webhdfs
from questlog.privacy import DONE, ERASED, PENDING, Request, RequestStore
from questlog.settings import Settings

log = logging.getLogger(__name__)

PARALLEL_TABLES = 4  # tables erased side by side (each its own Trino statements and commits)
MAX_PREDICATE_CHARS = 200_000  # players per DELETE: as many as fit (thousands of short ids)
# Trino's JSON functions (Jackson) fail the whole statement, not only the row (try() does not catch
# it), on a field name longer than 50,000 characters: one such dead letter would stop every erasure.
# A payload shorter than this cannot hold such a name; a longer one is matched in compact form only.
JSON_PARSE_MAX_CHARS = 50_000


class Busy(RuntimeError):
    """Another process is erasing (the compactor service, or `questlog forget --now`)."""


def player_predicate(table: Table, requests: list[Request]) -> str:
    """SQL true for the rows of ``requests``' players in ``table``."""
    parts = []
    if table.name == DEAD_LETTER_TABLE:  # the raw payload, as the collector and router write JSON
        for r in requests:
            assert r.user_id is not None
            match = raw_field_match("user_id", r.user_id)
            if r.source:
                match += " AND " + raw_field_match("source", r.source)
            parts.append(f"({match})")
        return " OR ".join(parts) or "false"
    anywhere = [r.user_id for r in requests if not r.source and r.user_id is not None]
    if anywhere:
        parts.append(f"{quote('user_id')} IN ({', '.join(literal(u) for u in anywhere)})")
    for r in requests:
        if r.source and r.user_id is not None:
            parts.append(f"({quote('source')} = {literal(r.source)} AND {quote('user_id')} = {literal(r.user_id)})")
    return " OR ".join(parts) or "false"


def raw_field_match(name: str, value: str) -> str:
    """SQL true for a dead letter whose raw payload has ``name`` = ``value``: as compact JSON (what
    the collector and the router write; also in a payload cut to fit, or an array's), or parsed
    (payloads shorter than JSON_PARSE_MAX_CHARS: Trino evaluates only the CASE branch taken)."""
    compact = f'"{name}":' + orjson.dumps(value).decode()
    parsed = f"try(json_extract_scalar(raw, {literal('$.' + name)}))"
    return (
        f"(strpos(raw, {literal(compact)}) > 0 OR "
        f"CASE WHEN length(raw) < {JSON_PARSE_MAX_CHARS} THEN {parsed} END = {literal(value)})"
    )


def chunks(requests: list[Request]) -> Iterator[list[Request]]:
    """The requests in groups whose predicates stay below MAX_PREDICATE_CHARS."""
    group: list[Request] = []
    size = 0
    for r in requests:
        cost = 2 * len(r.user_id or "") + len(r.source or "") + 120
        if group and size + cost > MAX_PREDICATE_CHARS:
            yield group
            group, size = [], 0
        group.append(r)
        size += cost
    if group:
        yield group


class Eraser:
    def __init__(
        self,
        settings: Settings,
        tables: Callable[[], list[Table]],
        progress: Callable[[str], None] | None = None,
        store: RequestStore | None = None,
    ) -> None:
        self.settings = settings
        self.tables = tables
        self.progress = progress or (lambda message: log.info("%s", message))
        self.store = store or RequestStore(settings)
        self.compactor = Compactor(settings, self.progress)

    def _sql(self, statement: str) -> list[list]:
        return self.compactor._sql(statement)

    @contextmanager
    def lock(self) -> Iterator[None]:
        path = self.store.root / "erase.lock"
        path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with open(path, "a") as handle:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                raise Busy("another process is erasing forgotten players; try again shortly") from None
            try:
                yield
            finally:
                fcntl.flock(handle, fcntl.LOCK_UN)

    # 1. Nothing routed before the requests still on its way ----------------------------------
    def _consumer(self):
        from confluent_kafka import Consumer

        return Consumer(
            {
                # this process's Kafka user (the local stack's `questlog-compactor`: it may describe
                # the topics and the router's group, no more)
                **self.settings.kafka_client(),
                "group.id": self.settings.router_id,
                "enable.auto.commit": False,
                "log_level": 0,
            }
        )

    def settled(self, since: float, timeout_s: float) -> str | None:
        """Wait (up to ``timeout_s``) until every event routed before ``since`` + the settle time
        has landed; None once it has, else what is still behind."""
        from confluent_kafka import TopicPartition

        s = self.settings
        left = since + s.forget_settle_s - time.time()
        if left > 0:
            time.sleep(left)
        deadline = time.monotonic() + timeout_s
        consumer = self._consumer()
        try:
            meta = consumer.list_topics(timeout=10).topics
            raw = [
                TopicPartition(s.raw_topic, p) for p in (meta[s.raw_topic].partitions if s.raw_topic in meta else ())
            ]
            ends = {tp.partition: consumer.get_watermark_offsets(tp, timeout=10)[1] for tp in raw}
            while True:
                committed = {tp.partition: tp.offset for tp in consumer.committed(raw, timeout=10)} if raw else {}
                behind = sum(max(0, end - max(committed.get(p, 0), 0)) for p, end in ends.items())
                if behind == 0:
                    break
                if time.monotonic() > deadline:
                    return f"the router has {behind} raw records to route from before the request"
                time.sleep(1.0)
            topics = [t.topic for t in self.tables()]
            typed = {
                (t, p): consumer.get_watermark_offsets(TopicPartition(t, p), timeout=10)[1]
                for t in topics
                if t in meta
                for p in meta[t].partitions
            }
        finally:
            consumer.close()
        while True:
            _, offsets = sink_progress(s)
            behind = sum(max(0, end - offsets.get(t, {}).get(p, 0)) for (t, p), end in typed.items() if end > 0)
            if behind == 0:
                return None
            if time.monotonic() > deadline:
                return f"the sink has {behind} records to land from before the request"
            time.sleep(1.0)

    # 2. Rows out of every table, files holding them rewritten --------------------------------
    def find(self, requests: list[Request]) -> dict[str, tuple[int, list[str]]]:
        """{table: (rows, data files holding them)} of the players' rows (the tables side by side)."""

        def one(table: Table) -> tuple[int, list[str]]:
            rows, files = 0, set()
            for group in chunks(requests):
                try:
                    found = self._sql(
                        f'SELECT "$path", count(*) FROM {qualified(self.settings, table.name)} '
                        f"WHERE {player_predicate(table, group)} GROUP BY 1"
                    )
                except Exception as exc:
                    if "does not exist" in str(exc) or "TABLE_NOT_FOUND" in str(exc):
                        break  # no table yet: nothing of anyone
                    raise
                rows += sum(int(r[1]) for r in found)
                files |= {r[0] for r in found}
            return rows, sorted(files)

        tables = self.tables()
        with ThreadPoolExecutor(max_workers=PARALLEL_TABLES) as pool:
            results = list(pool.map(one, tables))
        return {t.name: r for t, r in zip(tables, results, strict=True) if r[0]}

    def erase(self, requests: list[Request], tables: list[str]) -> None:
        """Delete the players' rows from ``tables``, then rewrite every file with deletes in every
        table (only the files that held rows of forgotten players: optimize with a threshold of one
        byte picks files with deletes and no other)."""
        by_name = {t.name: t for t in self.tables()}

        def one(name: str) -> None:
            table = by_name[name]
            if name in tables:
                for group in chunks(requests):
                    self._sql(f"DELETE FROM {qualified(self.settings, name)} WHERE {player_predicate(table, group)}")
            # every table, not only those with rows now: a pass killed after a DELETE left files with
            # deletes where no row of the player is found any more
            try:
                self.rewrite_deleted(name)
            except Exception as exc:
                if "does not exist" not in str(exc) and "TABLE_NOT_FOUND" not in str(exc):
                    raise

        with ThreadPoolExecutor(max_workers=PARALLEL_TABLES) as pool:
            list(pool.map(one, by_name))

    def rewrite_deleted(self, table: str) -> int:
        """Rewrite the data files that have delete files, partition by partition; how many dates."""
        dates = self._sql(
            f"SELECT DISTINCT partition.{quote(PARTITION_COLUMN)} FROM {self.compactor._meta(table, 'files')} "
            "WHERE content <> 0"
        )
        for (date,) in dates:
            self._sql(
                f"ALTER TABLE {qualified(self.settings, table)} EXECUTE optimize(file_size_threshold => '1B') "
                f"WHERE {quote(PARTITION_COLUMN)} = {literal(date)}"
            )
        return len(dates)

    # 3. The files that held them off HDFS ---------------------------------------------------
    def files_left(self, paths: list[str]) -> int:
        left = 0
        for path in paths:
            hdfs_path = "/" + path.split("://", 1)[-1].split("/", 1)[-1] if "://" in path else path
            try:
                webhdfs(self.settings, hdfs_path, "GETFILESTATUS", 10)
                left += 1
            except urllib.error.HTTPError as exc:
                if exc.code != 404:
                    raise
        return left

    def expire(self, table: str) -> None:
        """Expire snapshots older than the forget grace; the sink's latest too once its checkpoint
        has committed that batch (it is kept only to recognise a batch run again after a crash)."""
        committed, _ = sink_progress(self.settings)
        self.compactor.expire(table, self.settings.forget_grace_s, sink_committed_batch=committed)

    # The pass --------------------------------------------------------------------------------
    def run_once(self, settle_timeout_s: float = 60.0) -> list[Request]:
        """One pass over the open requests; the requests it changed."""
        changed: list[Request] = []
        with self.lock():
            pending = [r for r in self.store.open() if r.state == PENDING and r.user_id]
            if pending:
                behind = self.settled(max(r.requested_at for r in pending), settle_timeout_s)
                if behind is not None:
                    self.progress(f"{len(pending)} forget requests wait: {behind}")
                    for r in pending:
                        r.note = f"waiting: {behind}"
                        self.store.save(r)
                else:
                    started = time.monotonic()
                    found = self.find(pending)
                    files = sorted({f for _, fs in found.values() for f in fs})
                    rows = {t: n for t, (n, _) in found.items()}
                    for r in pending:  # what to check on HDFS later, kept before anything changes
                        r.files = sorted(set(r.files) | set(files))
                        for t, n in rows.items():
                            r.rows[t] = max(r.rows.get(t, 0), n)
                        self.store.save(r)
                    self.erase(pending, sorted(rows))
                    took = time.monotonic() - started
                    now = time.time()
                    for r in pending:
                        r.state, r.user_id, r.erased_at, r.note = ERASED, None, now, ""
                        r.files_rewritten = len(r.files)
                        self.store.save(r)
                        self.store.audit(
                            "rows erased",
                            r,
                            tables=sorted(r.rows),
                            rows=sum(r.rows.values()),
                            files_rewritten=len(r.files),
                            requests_in_pass=len(pending),
                            seconds=round(took, 1),
                        )
                    self.progress(
                        f"{len(pending)} forget requests: {sum(rows.values())} rows in {len(files)} files "
                        f"of {len(rows)} tables erased in {took:.1f}s"
                    )
                    changed += pending
            for r in [r for r in self.store.open() if r.state == ERASED]:
                if time.time() < (r.erased_at or 0) + self.settings.forget_grace_s:
                    continue
                names = [t.name for t in self.tables()]
                for table in names:
                    self.expire(table)
                # A file whose removal is recorded only in the table's current snapshot (the
                # rewrite, in a table nobody wrote to since) outlives every expiry: it is no
                # longer part of any snapshot's data, so the orphan sweep takes it.
                for table in sorted(r.rows) if r.rows else names:
                    self.compactor.remove_orphans(table, self.settings.forget_grace_s)
                left = self.files_left(r.files)
                if left:
                    r.note = f"{left} of the {len(r.files)} files that held the rows still on HDFS"
                    self.store.save(r)
                    continue
                r.state, r.done_at, r.note = DONE, time.time(), ""
                r.files = []
                self.store.save(r)
                self.store.audit("files removed", r, tables=sorted(r.rows))
                changed.append(r)
        return changed
