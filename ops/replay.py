"""Re-sending dead letters once the catalog accepts them: `questlog replay`.

A dead letter's raw payload is sent again, unchanged, to the raw topic (same `source` and
`event_id`, same `received_at`, so the same `dt`). Replaying is idempotent: events already in
their table are not sent, and the sink drops any repeated (`source`, `event_id`) besides. Two
sources may use the same `event_id`: each is an event of its own, here as in the sink.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

from questlog.catalog import DEAD_LETTER_TABLE, Catalog, event_key, validate
from questlog.deadletters import check_codes, reason_code
from questlog.settings import Settings

# An event's identity: (source, event_id); source is None for events from before sources existed.
Identity = tuple[str | None, str]


@dataclass
class ReplayPlan:
    send: dict[Identity, tuple[str, bytes]] = field(default_factory=dict)  # (source, event_id) -> (event_type, raw)
    still_invalid: Counter = field(default_factory=Counter)  # reason -> count
    not_replayable: int = 0  # not JSON, or without an event_id: no catalog change can fix them
    already_landed: int = 0
    replayed: int = 0  # sent again (or, with --dry-run, that would be)


class Progress:
    """Counts of a replay's steps on stderr: a rich bar on a terminal, else a line every ``every_s``
    seconds and one when a step ends."""

    def __init__(self, every_s: float = 10.0, stream=None) -> None:
        import sys

        self.stream = stream if stream is not None else sys.stderr
        self.every_s = every_s
        self.tty = getattr(self.stream, "isatty", lambda: False)()
        self._bar: Any = None
        self._task: Any = None
        self.what, self.done, self.last = "", 0, 0.0
        self.total: int | None = None

    def step(self, what: str, total: int | None = None) -> None:
        import time

        self.end()
        self.what, self.total, self.done, self.last = what, total, 0, time.monotonic()
        if self.tty:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            self._bar = Progress(
                TextColumn(f"questlog: replay: {what}"),
                BarColumn(),
                MofNCompleteColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._bar.add_task(what, total=total)
            self._bar.start()

    def advance(self, n: int = 1) -> None:
        import time

        self.done += n
        if self._bar is not None:
            self._bar.update(self._task, completed=self.done)
        elif time.monotonic() - self.last >= self.every_s:
            self.last = time.monotonic()
            self._line()

    def _line(self) -> None:
        of = f" of {self.total:,}" if self.total is not None else ""
        print(f"questlog: replay: {self.what}: {self.done:,}{of}", file=self.stream, flush=True)

    def end(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None
        if self.what:
            self._line()
            self.what = ""


def plan_replay(raws: list[str], catalog: Catalog) -> ReplayPlan:
    """Which dead letters (their raw payloads) the catalog now accepts, by (source, event_id)."""
    plan = ReplayPlan()
    for raw in raws:
        try:
            event = json.loads(raw)
        except (ValueError, RecursionError):  # the router dead-letters JSON nested too deep as such
            plan.not_replayable += 1
            continue
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            plan.not_replayable += 1
            continue
        errors = validate(event, catalog)
        if errors:
            plan.still_invalid["; ".join(errors)] += 1
        else:
            source = event.get("source") if isinstance(event.get("source"), str) else None
            plan.send[(source, event["event_id"])] = (event["event_type"], raw.encode())
    return plan


def _landed(cursor, catalog: Catalog, plan: ReplayPlan, progress: Progress | None = None) -> set[Identity]:
    """The planned events already in their table, matched on (source, event_id)."""
    landed: set[Identity] = set()
    by_type: dict[str, list[str]] = {}
    for identity, (event_type, _) in plan.send.items():
        by_type.setdefault(event_type, []).append(identity[1])
    for event_type, ids in by_type.items():
        table = catalog.types[event_type].table
        ids = sorted(set(ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i : i + 500]
            cursor.execute(
                f'SELECT source, event_id FROM "{table}" WHERE event_id IN ({", ".join("?" * len(chunk))})', chunk
            )
            landed.update((row[0], row[1]) for row in cursor.fetchall())
            if progress is not None:
                progress.advance(len(chunk))
    return landed & plan.send.keys()


# Dead letters read, planned, looked up and sent a chunk at a time: a replay holds one chunk's
# payloads in memory, not the table's.
CHUNK = 1000


def replay(
    settings: Settings,
    catalog: Catalog,
    event_type: str | None = None,
    dry_run: bool = False,
    progress: Progress | None = None,
    codes: list[str] | None = None,
) -> ReplayPlan:
    """Send the dead letters that the catalog now accepts and that did not land since back to the
    raw topic; only those of ``event_type`` and of the reason ``codes`` (questlog.deadletters), if
    given. A dead letter from before the `reason_code` column is coded from its text.

    Streams: CHUNK dead letters at a time are read, planned, looked up in their tables (a second
    query beside the one reading) and produced, so memory holds one chunk of payloads and the
    identities sent so far (a repeat of one in a later chunk is not sent twice). Returns the counts
    (``replayed``; ``send`` stays empty)."""
    from confluent_kafka import Producer

    from questlog.sql import connect

    progress = progress or Progress()
    total = ReplayPlan()
    seen: set[Identity] = set()
    producer = None if dry_run else Producer({**settings.kafka_client(), "enable.idempotence": True, "acks": "all"})
    conn = connect(settings)
    try:
        cur, lookup = conn.cursor(), conn.cursor()
        sql = f'SELECT raw, reason_code, reason FROM "{DEAD_LETTER_TABLE}"'
        where, params = [], []
        if event_type:
            where.append("event_type = ?")
            params.append(event_type)
        if codes:
            check_codes(codes)
            where.append(f"(reason_code IN ({', '.join('?' * len(codes))}) OR reason_code IS NULL)")
            params += codes
        if where:
            sql += " WHERE " + " AND ".join(where)
        cur.execute(sql, params)
        progress.step("dead letters read, checked and (if the catalog takes them now) re-sent")
        while rows := cur.fetchmany(CHUNK):
            raws = [raw for raw, code, reason in rows if not codes or (code or reason_code(reason)) in codes]
            plan = plan_replay(raws, catalog)
            for identity in plan.send.keys() & seen:
                del plan.send[identity]
            seen.update(plan.send)
            landed = _landed(lookup, catalog, plan)
            for identity in landed:
                del plan.send[identity]
            total.already_landed += len(landed)
            total.not_replayable += plan.not_replayable
            total.still_invalid.update(plan.still_invalid)
            total.replayed += len(plan.send)
            if producer is not None:
                for (source, event_id), (_, raw) in plan.send.items():
                    key = event_key(source, event_id)
                    producer.produce(settings.raw_topic, raw, key=key, headers={"questlog-replay": b"1"})
                    producer.poll(0)
            progress.advance(len(rows))
        progress.end()
    finally:
        conn.close()
    if producer is not None:
        remaining = producer.flush(60)
        if remaining:
            raise RuntimeError(f"Kafka did not confirm {remaining} replayed events; run the replay again")
    return total
