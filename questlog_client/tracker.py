"""Questlog's Python client: track events from a game server without waiting and without losing them.

    from questlog_client import Tracker

    tracker = Tracker("http://127.0.0.1:5000", write_key=None)
    tracker.track("purchase_sword", user_id="p-17", sword_type="katana", price=12.5, currency="gold")
    tracker.close()  # also done at interpreter exit

How it works:

* ``track()`` gives the event its ``event_id`` (``<tracker id>-<n>``, unique per Tracker) and its
  ``client_ts`` (the moment of the call), checks it against the deployed catalog when it has one
  (an :class:`InvalidEvent` at once, during development, rather than a dead letter later), and
  puts it on a bounded memory queue. It never does I/O and returns in a few microseconds.
* A batcher thread takes events off the queue in batches of ``batch_size`` events, or whatever is
  there every ``flush_interval_s``, and serialises each batch **once**: a batch keeps its body, so
  every retry sends the same events with the same ids, which the collector and the sink recognise
  (the dedupe key is (source, event_id)). A batch whose body is over ``max_batch_bytes`` is cut in
  halves until each fits. ``senders`` threads POST batches to ``/events``.
* 2xx: accepted. 5xx, 429, a timeout or a connection error: sent again after an exponential
  backoff with jitter (``backoff_base_s * 2**attempt``, capped at ``backoff_max_s``, a random
  half of it added or not), or after the server's ``Retry-After`` when it gives one; for as long as
  the tracker is open. 413 (too large) for a batch of several events: cut in halves, each sent (and
  spooled) as a batch of its own with the same ids. 401 and 403 (no valid write key): the batch is
  kept (in the spool, if any) and sent again like a 5xx, with an error logged at once and every
  ten attempts and counted in ``stats.unauthorized``: fixing the key on either side lets it through,
  and nothing is lost meanwhile. Any other 4xx, and a 413 for a single event, is final: the batch
  is counted as refused, logged, and passed to ``on_refused(events, status, reason)``; it is never
  sent again.
* **When the queue is full** (``max_queue`` events waiting), ``on_full`` decides:
  ``"block"`` (the default) makes ``track()`` wait up to ``block_timeout_s`` for room, then drop the
  event; ``"drop_oldest"`` discards the oldest waiting event at once. Either way every dropped
  event is counted in ``stats.dropped`` and logged (once per 1,000). With a spool the queue is
  drained to disk as fast as the disk takes it, so it fills only if the disk is slower than the game.
* **Spool** (``spool_dir``): every batch is appended to a segment file in that directory before its
  first send, and marked done (accepted or refused) after. A Tracker started on the same directory
  (after a crash, a ``kill -9`` or a restart while the collector was unreachable) first re-sends every
  batch not marked done, with its original ids. Records are length-prefixed; a torn last record (a
  crash mid-write) is ignored. The fsync policy (``fsync``): ``"batch"`` (default) fsyncs each batch
  before it is sent, so a spooled batch survives a power loss too; ``"never"`` only writes it to the
  OS (survives the process being killed, not the machine crashing). Done marks are never fsynced:
  one lost after a crash means a batch is sent twice, and the sink drops the repeats. Segments roll
  at ``spool_segment_bytes``; a segment is deleted once all its batches are done. One Tracker at a
  time owns a spool directory (an exclusive lock). Without a spool, events still waiting when
  ``close()`` gives up are counted in ``stats.lost`` and logged.
* ``flush(timeout_s)`` waits until everything tracked so far is accepted or refused;
  ``close(timeout_s)`` flushes, stops the threads and (with a spool) leaves what could not be sent on
  disk for the next Tracker. ``close()`` runs at interpreter exit for every open Tracker.
"""

from __future__ import annotations

import atexit
import fcntl
import itertools
import json
import logging
import os
import random
import threading
import time
import uuid
import weakref
from collections import Counter, deque
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, BinaryIO, Literal

import requests

log = logging.getLogger(__name__)

OnFull = Literal["block", "drop_oldest"]
Fsync = Literal["batch", "never"]
RefusedCallback = Callable[[list[dict[str, Any]], int, str], None]

_UTC = UTC
_SOME_TS = "2000-01-01T00:00:00+00:00"


class InvalidEvent(ValueError):
    """``track()`` was given an event the deployed catalog refuses; the message lists every problem."""


@dataclass
class Stats:
    """What a Tracker did so far. Counts are of events; ``*_by_type`` split them by event type."""

    tracked: int = 0  # accepted by track() onto the queue
    accepted: int = 0  # the collector answered 2xx for them
    refused: int = 0  # a final 4xx: never re-sent
    dropped: int = 0  # the queue was full (see on_full)
    lost: int = 0  # still unsent when close() gave up, without a spool to keep them
    retries: int = 0  # batch sends that were repeated (5xx, 429, 401, 403, timeout, connection error)
    unauthorized: int = 0  # answers 401 or 403: the write key is missing or wrong (the batch is kept)
    splits: int = 0  # batches cut in halves after a 413
    recovered: int = 0  # events found unsent in the spool at start, re-sent
    batches: int = 0  # batches accepted
    accepted_by_type: Counter = field(default_factory=Counter)
    refused_by_type: Counter = field(default_factory=Counter)
    errors: Counter = field(default_factory=Counter)  # "503", "connection error", "timeout", "400", ...


@dataclass
class _Batch:
    seq: int
    count: int
    types: Counter
    body: bytes | None  # None: only in the spool (read back when sent)
    ids: list[str] = field(default_factory=list)
    segment: _Segment | None = None
    offset: int = 0  # of the body in the segment file
    length: int = 0
    recovered: bool = False


_active: weakref.WeakSet[Tracker] = weakref.WeakSet()


@atexit.register
def _close_all() -> None:
    for tracker in list(_active):
        try:
            tracker.close()
        except Exception:  # at exit: report, never raise
            log.exception("closing a questlog Tracker at exit failed")


class Tracker:
    """Sends events to a Questlog collector in batches, in the background.

    ``url``: the collector (``http://127.0.0.1:5000``). ``write_key``: sent as
    ``Authorization: Bearer <key>`` when write keys are on. ``catalog``: ``"auto"`` (default) checks
    events against the deployed catalog (QUESTLOG_CATALOG, else the packaged one) if it can be read,
    ``None`` checks nothing, or a :class:`questlog.catalog.Catalog` or a path. See the module's
    docstring for batching, retries, the queue-full policy and the spool."""

    def __init__(
        self,
        url: str,
        write_key: str | None = None,
        *,
        batch_size: int = 500,
        max_batch_bytes: int = 512 * 1024,
        flush_interval_s: float = 0.25,
        max_queue: int = 100_000,
        on_full: OnFull = "block",
        block_timeout_s: float = 10.0,
        senders: int = 2,
        timeout_s: float = 30.0,
        backoff_base_s: float = 0.25,
        backoff_max_s: float = 30.0,
        spool_dir: str | Path | None = None,
        fsync: Fsync = "batch",
        spool_segment_bytes: int = 16 * 2**20,
        catalog: Any = "auto",
        id_prefix: str | None = None,
        on_refused: RefusedCallback | None = None,
        on_accepted: Callable[[list[str], Counter], None] | None = None,
    ) -> None:
        if on_full not in ("block", "drop_oldest"):
            raise ValueError(f"on_full must be 'block' or 'drop_oldest', not {on_full!r}")
        if fsync not in ("batch", "never"):
            raise ValueError(f"fsync must be 'batch' or 'never', not {fsync!r}")
        if batch_size < 1 or max_queue < 1 or senders < 1 or max_batch_bytes < 1:
            raise ValueError("batch_size, max_batch_bytes, max_queue and senders must be at least 1")
        self.url = url.rstrip("/") + "/events"
        self.batch_size = batch_size
        self.max_batch_bytes = max_batch_bytes
        self.flush_interval_s = flush_interval_s
        self.max_queue = max_queue
        self.on_full = on_full
        self.block_timeout_s = block_timeout_s
        self.timeout_s = timeout_s
        self.backoff_base_s = backoff_base_s
        self.backoff_max_s = backoff_max_s
        self.on_refused = on_refused
        self.on_accepted = on_accepted
        self.stats = Stats()
        self._headers = {"Content-Type": "application/json"}
        if write_key:
            self._headers["Authorization"] = f"Bearer {write_key}"
        self._prefix = id_prefix or uuid.uuid4().hex[:16]
        self._ids = itertools.count(1)  # next() on it is atomic: two game threads never share a number
        self._catalog = _catalog(catalog)
        self._checks = _fast_checks(self._catalog) if self._catalog is not None else None
        self._queue: deque[dict[str, Any]] = deque()
        self._lock = threading.Lock()
        self._room = threading.Condition(self._lock)  # track() waits here when the queue is full
        self._wake = threading.Event()  # the batcher: a batch is ready, or flush/close
        self._pending: deque[_Batch] = deque()  # formed, not yet done, not being sent
        self._pending_cv = threading.Condition()
        self._in_memory_limit = max(2 * senders, 4)  # batch bodies kept in memory when spooling
        # Events tracked (counted under _lock by track()) and finished (accepted, refused or dropped;
        # counted under _done_cv): their difference is what flush() waits for.
        self._in = 0
        self._out = 0
        self._done_cv = threading.Condition()
        self._closing = False
        self._stopped = threading.Event()
        self._spool = _Spool(Path(spool_dir), fsync, spool_segment_bytes) if spool_dir else None
        self._seq = 0
        if self._spool is not None:
            for batch in self._spool.recover():
                self._pending.append(batch)
                self._in += batch.count
                self.stats.recovered += batch.count
            self._seq = self._spool.next_seq
            if self.stats.recovered:
                log.info("questlog tracker: re-sending %d events left in the spool %s", self.stats.recovered, spool_dir)
        self._threads = [threading.Thread(target=self._batch_loop, name="questlog-batcher", daemon=True)]
        self._threads += [
            threading.Thread(target=self._send_loop, name=f"questlog-sender-{i}", daemon=True) for i in range(senders)
        ]
        for thread in self._threads:
            thread.start()
        _active.add(self)

    # The game's side ---------------------------------------------------------------------------

    def track(self, event_type: str, **fields: Any) -> str:
        """Queue one event of ``event_type`` with ``fields``; returns its event_id at once.

        Raises :class:`InvalidEvent` if the deployed catalog refuses it (unknown type, unknown
        field, wrong type, missing required field)."""
        if self._checks is not None:
            self._check(event_type, fields)
        fields["event_type"] = event_type
        return self._enqueue(fields)

    def track_event(self, event: Mapping[str, Any], check: bool = True) -> str:
        """Queue one event given as a mapping with its ``event_type`` (and, if it has one, its own
        ``event_id`` and ``client_ts``); ``check=False`` skips the catalog check (to send a
        deliberately bad event, which becomes a dead letter)."""
        event = dict(event)
        if check and self._checks is not None:
            fields = {k: v for k, v in event.items() if k not in ("event_type", "event_id", "client_ts")}
            self._check(event.get("event_type"), fields, event)
        return self._enqueue(event)

    def _check(self, event_type: Any, fields: dict[str, Any], event: Mapping[str, Any] | None = None) -> None:
        """Raise InvalidEvent if the catalog refuses the event. The common case (known fields of
        plain values, required ones present) is a few dict look-ups; anything else goes through
        the catalog's own validate(), whose reasons are the ones the router would give."""
        spec = self._checks.get(event_type)  # type: ignore[union-attr]
        if spec is not None and event is None:
            known, required = spec
            for name, value in fields.items():
                check = known.get(name)
                if check is None or not check(value):
                    break
            else:
                for name in required:
                    if name not in fields:
                        break
                else:
                    return
        from questlog.catalog import validate

        full = {**(event or fields), "event_type": event_type, "event_id": "x", "received_at": _SOME_TS}
        if event is not None and "event_id" in event:
            full["event_id"] = event["event_id"]
        if type(full.get("client_ts")) is float:
            full["client_ts"] = _SOME_TS
        problems = validate(full, self._catalog)
        if problems:
            raise InvalidEvent(f"{event_type}: " + "; ".join(problems))

    def _enqueue(self, event: dict[str, Any]) -> str:
        event_id = event.get("event_id")
        if event_id is None:
            event_id = event["event_id"] = f"{self._prefix}-{next(self._ids)}"
        if "client_ts" not in event:
            event["client_ts"] = time.time()  # formatted by the batcher, off the game's thread
        with self._lock:
            if self._closing:
                raise RuntimeError("this Tracker is closed")
            if len(self._queue) >= self.max_queue:
                if not self._make_room():
                    return event_id
            self._queue.append(event)
            self.stats.tracked += 1
            self._in += 1
            if len(self._queue) >= self.batch_size:
                self._wake.set()
        return event_id

    def _make_room(self) -> bool:
        """With the lock held and the queue full: apply on_full; True if the event may be queued."""
        if self.on_full == "drop_oldest":
            self._queue.popleft()
            self._dropped(finished=1)
            return True
        self._wake.set()
        deadline = time.monotonic() + self.block_timeout_s
        while len(self._queue) >= self.max_queue:
            left = deadline - time.monotonic()
            if left <= 0 or self._closing:
                self._dropped(finished=0)
                return False
            self._room.wait(left)
        return True

    def _dropped(self, finished: int) -> None:
        """With the lock held: one event dropped; ``finished`` of them had been counted as tracked."""
        self.stats.dropped += 1
        if self.stats.dropped % 1000 == 1:
            log.warning(
                "questlog tracker: queue full (%d events), %d events dropped so far (on_full=%s)",
                self.max_queue,
                self.stats.dropped,
                self.on_full,
            )
        if finished:
            with self._done_cv:
                self._out += finished
                self._done_cv.notify_all()

    def flush(self, timeout_s: float | None = None) -> bool:
        """Wait until every event tracked so far is accepted or refused (or dropped); True if so."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._wake.set()
        with self._done_cv:
            while self._in - self._out > 0:
                left = None if deadline is None else deadline - time.monotonic()
                if left is not None and left <= 0:
                    return False
                self._wake.set()
                self._done_cv.wait(0.05 if left is None else min(left, 0.05))
        return True

    def close(self, timeout_s: float = 30.0) -> bool:
        """Send what is queued (waiting up to ``timeout_s``), then stop. With a spool, what could not
        be sent stays there for the next Tracker; without one it is counted in ``stats.lost``.
        True if everything was sent. Closing twice does nothing."""
        with self._lock:
            if self._closing:
                return self.queued == 0
            self._closing = True
            self._room.notify_all()
        _active.discard(self)
        done = self.flush(timeout_s)
        self._stopped.set()
        self._wake.set()
        with self._pending_cv:
            self._pending_cv.notify_all()
        for thread in self._threads:
            thread.join(max(1.0, self.timeout_s + 1) if thread.name != "questlog-batcher" else 5.0)
        if not done:
            left = self.queued
            if self._spool is not None:
                log.warning(
                    "questlog tracker: closed with %d events unsent; they are in the spool %s",
                    left,
                    self._spool.directory,
                )
            else:
                self.stats.lost += left
                log.error("questlog tracker: closed with %d events unsent and no spool: they are lost", left)
        if self._spool is not None:
            self._spool.close()
        return done

    def __enter__(self) -> Tracker:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @property
    def queued(self) -> int:
        """Events tracked and not yet accepted, refused or dropped."""
        return self._in - self._out

    # The background's side ----------------------------------------------------------------------

    def _take(self) -> list[dict[str, Any]]:
        with self._lock:
            n = min(self.batch_size, len(self._queue))
            events = [self._queue.popleft() for _ in range(n)]
            if n:
                self._room.notify_all()
            return events

    def _batch_loop(self) -> None:
        while True:
            self._wake.wait(self.flush_interval_s)
            self._wake.clear()
            while True:
                if not self._room_for_batch():
                    break
                events = self._take()
                if not events:
                    break
                try:
                    self._form(events)
                except Exception:  # a bug or a full disk must not kill the thread silently
                    log.exception("questlog tracker: could not form a batch of %d events", len(events))
                    with self._lock:
                        self._queue.extendleft(reversed(events))
                    time.sleep(1.0)
                    break
                if len(self._queue) < self.batch_size and not self._closing:
                    break
            if self._stopped.is_set():
                # Closing: what is still queued goes to the spool (if any) for the next Tracker.
                if self._spool is not None:
                    while events := self._take():
                        self._form(events, send=False)
                return

    def _room_for_batch(self) -> bool:
        """Without a spool, at most a few batches wait in memory; the queue holds the rest (and
        applies on_full). With one, batches go to disk as fast as they come."""
        if self._spool is not None:
            return True
        with self._pending_cv:
            return len(self._pending) < self._in_memory_limit

    def _form(self, events: list[dict[str, Any]], send: bool = True) -> None:
        types: Counter = Counter()
        fromtimestamp = datetime.fromtimestamp
        for e in events:
            ts = e.get("client_ts")
            if type(ts) is float:
                e["client_ts"] = fromtimestamp(ts, _UTC).isoformat(timespec="milliseconds")
            types[e.get("event_type")] += 1
        body = json.dumps(events, separators=(",", ":"), default=str).encode()
        if len(body) > self.max_batch_bytes and len(events) > 1:  # rare: cut in halves until each fits
            half = len(events) // 2
            self._form(events[:half], send)
            self._form(events[half:], send)
            return
        self._queue_batch(self._new_batch(events, types, body), send)

    def _new_batch(self, events: list[dict[str, Any]], types: Counter, body: bytes) -> _Batch:
        with self._pending_cv:  # senders make batches too (a 413's halves)
            self._seq += 1
            seq = self._seq
        return _Batch(seq, len(events), types, body, [e["event_id"] for e in events])

    def _queue_batch(self, batch: _Batch, send: bool = True, first: bool = False) -> None:
        if self._spool is not None:
            self._spool.append(batch)
            with self._pending_cv:
                if len(self._pending) >= self._in_memory_limit:
                    batch.body = None  # read back from the spool when its turn comes
        if send:
            with self._pending_cv:
                if first:
                    self._pending.appendleft(batch)
                else:
                    self._pending.append(batch)
                self._pending_cv.notify()

    def _send_loop(self) -> None:
        session = requests.Session()
        while True:
            with self._pending_cv:
                while not self._pending and not self._stopped.is_set():
                    self._pending_cv.wait(0.5)
                if self._stopped.is_set():
                    return
                batch = self._pending.popleft()
            try:
                self._deliver(session, batch)
            except _Stopped:
                return
            except Exception:
                log.exception("questlog tracker: sending batch %d failed unexpectedly; it will be retried", batch.seq)
                with self._pending_cv:
                    self._pending.appendleft(batch)
                time.sleep(1.0)

    def _deliver(self, session: requests.Session, batch: _Batch) -> None:
        body = batch.body if batch.body is not None else self._spool.read(batch)  # type: ignore[union-attr]
        attempt = 0
        while True:
            if attempt and self._stopped.is_set():
                raise _Stopped
            retry_after: float | None = None
            try:
                response = session.post(self.url, data=body, headers=self._headers, timeout=self.timeout_s)
            except requests.Timeout:
                error = "timeout"
            except requests.RequestException:
                error = "connection error"
            else:
                status = response.status_code
                if 200 <= status < 300:
                    self._finished(batch, accepted=True, body=body)
                    return
                error = str(status)
                if status == 413 and batch.count > 1:
                    self._split(batch, body)
                    return
                if status in (401, 403):
                    self._unauthorized(batch, status, response.text, attempt)
                elif status < 500 and status != 429:
                    self._refused(batch, body, status, response.text)
                    return
                retry_after = _retry_after(response.headers.get("Retry-After"))
            with self._done_cv:
                self.stats.errors[error] += 1
                self.stats.retries += 1
            wait = retry_after if retry_after is not None else backoff(attempt, self.backoff_base_s, self.backoff_max_s)
            attempt += 1
            if error not in ("401", "403") and (attempt in (1, 10) or attempt % 100 == 0):
                log.warning(
                    "questlog tracker: batch %d (%d events): %s; attempt %d, retrying in %.2fs",
                    batch.seq,
                    batch.count,
                    error,
                    attempt,
                    wait,
                )
            if self._stopped.wait(wait):
                raise _Stopped

    def _split(self, batch: _Batch, body: bytes) -> None:
        """A 413: the batch's events as two batches (spooled before the batch is marked done), sent
        next, with the same ids; halves that are still too large are cut again."""
        events = json.loads(body)
        half = len(events) // 2
        halves = []
        for part in (events[:half], events[half:]):
            part_body = json.dumps(part, separators=(",", ":"), default=str).encode()
            halves.append(self._new_batch(part, Counter(e.get("event_type") for e in part), part_body))
        log.warning(
            "questlog tracker: batch %d (%d events, %d bytes) too large for the collector (413); sending it in halves",
            batch.seq,
            batch.count,
            len(body),
        )
        for half_batch in reversed(halves):
            self._queue_batch(half_batch, first=True)
        if self._spool is not None:
            self._spool.done(batch)
        with self._done_cv:
            self.stats.errors["413"] += 1
            self.stats.splits += 1

    def _unauthorized(self, batch: _Batch, status: int, text: str, attempt: int) -> None:
        """401/403: the write key is missing or wrong. The batch is kept and sent again; said loudly
        (said first, then counted: whoever sees the count sees the message too)."""
        if attempt % 10 == 0:
            where = f"kept in the spool {self._spool.directory}" if self._spool is not None else "kept in memory"
            log.error(
                "questlog tracker: batch %d (%d events) refused with %d (%s): the write key is missing or wrong; "
                "the batch is %s and sent again until the key is fixed (attempt %d)",
                batch.seq,
                batch.count,
                status,
                _reason(text)[:200],
                where,
                attempt + 1,
            )
        with self._done_cv:
            self.stats.unauthorized += batch.count if attempt == 0 else 0

    def _refused(self, batch: _Batch, body: bytes, status: int, text: str) -> None:
        reason = _reason(text)
        with self._done_cv:
            self.stats.errors[str(status)] += 1
        log.error(
            "questlog tracker: batch %d (%d events) refused with %d: %s; not retried",
            batch.seq,
            batch.count,
            status,
            str(reason)[:500],
        )
        if self.on_refused is not None:
            try:
                self.on_refused(json.loads(body), status, str(reason))
            except Exception:
                log.exception("questlog tracker: the on_refused callback failed")
        self._finished(batch, accepted=False, body=body)

    def _finished(self, batch: _Batch, accepted: bool, body: bytes) -> None:
        if self._spool is not None:
            self._spool.done(batch)
        with self._done_cv:
            if accepted:
                self.stats.accepted += batch.count
                self.stats.batches += 1
                self.stats.accepted_by_type.update(batch.types)
            else:
                self.stats.refused += batch.count
                self.stats.refused_by_type.update(batch.types)
            self._out += batch.count
            self._done_cv.notify_all()
        if accepted and self.on_accepted is not None:
            try:
                self.on_accepted(batch.ids, batch.types)
            except Exception:
                log.exception("questlog tracker: the on_accepted callback failed")


class _Stopped(Exception):
    pass


def backoff(attempt: int, base_s: float, max_s: float) -> float:
    """Seconds to wait before retry ``attempt + 1``: ``base_s * 2**attempt`` capped at ``max_s``,
    of which a random half is kept or not (equal jitter), so that clients refused together do not
    come back together."""
    cap = min(max_s, base_s * 2 ** min(attempt, 30))
    return cap / 2 + random.uniform(0, cap / 2)


def _reason(text: str) -> str:
    """The collector's reason (its JSON's ``error``), else the answer's text."""
    try:
        return str(json.loads(text).get("error", text))
    except (ValueError, AttributeError):
        return text


def _retry_after(value: str | None) -> float | None:
    """Seconds from a Retry-After header (delta-seconds form), or None."""
    if value is None:
        return None
    try:
        return max(0.0, min(float(value), 3600.0))
    except ValueError:
        return None


def _catalog(catalog: Any):
    if catalog is None:
        return None
    try:
        from questlog.catalog import Catalog, CatalogError, load_catalog
    except ImportError:  # the client installed on its own: nothing to check against
        if catalog != "auto":
            raise
        log.info("questlog tracker: the questlog package is not installed; events are not checked")
        return None

    if isinstance(catalog, Catalog):
        return catalog
    path = os.environ.get("QUESTLOG_CATALOG") if catalog == "auto" else catalog
    try:
        return load_catalog(path or None)
    except CatalogError as exc:
        if catalog != "auto":
            raise
        log.info("questlog tracker: no catalog to check events against (%s)", exc)
        return None


_FAST: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "boolean": lambda v: type(v) is bool,
    "long": lambda v: type(v) is int and -(2**63) <= v < 2**63,
    "double": lambda v: (type(v) is float and v - v == 0) or type(v) is int,  # finite: inf - inf is nan
}


def _fast_checks(catalog) -> dict[str, tuple[dict[str, Callable[[Any], bool]], tuple[str, ...]]]:
    """Per type: (field -> a quick check of a value, the required fields) for the fields a client
    sets. Timestamps and None are left to the catalog's validate() (the slow path)."""
    from questlog.catalog import ENVELOPE_NAMES

    client_set = {"event_id", "event_type", "client_ts", "received_at"}
    checks = {}
    for et in catalog:
        known = {
            f.name: _FAST[f.type]
            for f in et.columns
            if f.type in _FAST and (f.name not in ENVELOPE_NAMES or f.name == "user_id")
        }
        required = tuple(f.name for f in et.columns if f.required and f.name not in client_set)
        checks[et.name] = (known, required)
    return checks


# The spool ---------------------------------------------------------------------------------------

_BATCH, _DONE = b"B", b"D"


class _Segment:
    def __init__(self, path: Path) -> None:
        self.path = path
        self.open_batches = 0
        self.file: BinaryIO | None = None


class _Spool:
    """Append-only segment files ``spool-<n>.log`` of records ``B <seq> <length>\\n<body>\\n`` (a
    batch) and ``D <seq>\\n`` (that batch is done)."""

    def __init__(self, directory: Path, fsync: Fsync, segment_bytes: int) -> None:
        self.directory = directory
        self.fsync = fsync
        self.segment_bytes = segment_bytes
        directory.mkdir(parents=True, exist_ok=True)
        self._lockfile = open(directory / "LOCK", "a+")
        try:
            fcntl.flock(self._lockfile, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            self._lockfile.close()
            raise RuntimeError(f"the spool {directory} is in use by another Tracker") from None
        self._lock = threading.Lock()
        self.next_seq = 1
        self.appended = 0  # batches written by this Tracker
        self._segments: list[_Segment] = []
        self._current: _Segment | None = None
        self._by_seq: dict[int, _Segment] = {}

    def recover(self) -> Iterator[_Batch]:
        """The batches not marked done, oldest first; fully done segments are deleted."""
        found: list[_Batch] = []
        for path in sorted(self.directory.glob("spool-*.log"), key=lambda p: int(p.stem.split("-")[1])):
            segment = _Segment(path)
            batches: dict[int, _Batch] = {}
            for kind, seq, offset, length in _records(path):
                self.next_seq = max(self.next_seq, seq + 1)
                if kind == _BATCH:
                    batches[seq] = _Batch(seq, 0, Counter(), None, [], segment, offset, length, recovered=True)
                else:
                    batches.pop(seq, None)
            if not batches:
                path.unlink()
                continue
            segment.open_batches = len(batches)
            self._segments.append(segment)
            for batch in batches.values():
                events = json.loads(self.read(batch))
                batch.count = len(events)
                batch.types = Counter(e.get("event_type") for e in events)
                batch.ids = [e.get("event_id") for e in events]
                self._by_seq[batch.seq] = segment
                found.append(batch)
        return iter(found)

    def _segment(self, size: int) -> _Segment:
        current = self._current
        if current is None or current.file is None or current.file.tell() + size > self.segment_bytes:
            if current is not None and current.file is not None:
                current.file.close()
                current.file = None
                self._drop_if_done(current)
            numbers = [int(s.path.stem.split("-")[1]) for s in self._segments]
            current = _Segment(self.directory / f"spool-{max(numbers, default=0) + 1}.log")
            current.file = open(current.path, "ab")
            if self.fsync == "batch":  # the new file's name must survive a power loss too
                fd = os.open(self.directory, os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
            self._segments.append(current)
            self._current = current
        return current

    def append(self, batch: _Batch) -> None:
        body = batch.body or b""
        header = b"%s %d %d\n" % (_BATCH, batch.seq, len(body))
        with self._lock:
            segment = self._segment(len(header) + len(body) + 1)
            f = segment.file
            assert f is not None  # _segment opened it
            offset = f.tell() + len(header)
            f.write(header + body + b"\n")
            f.flush()
            if self.fsync == "batch":
                os.fsync(f.fileno())
            segment.open_batches += 1
            self.appended += 1
            batch.segment, batch.offset, batch.length = segment, offset, len(body)

    def read(self, batch: _Batch) -> bytes:
        with open(batch.segment.path, "rb") as f:  # type: ignore[union-attr]
            f.seek(batch.offset)
            return f.read(batch.length)

    def done(self, batch: _Batch) -> None:
        segment = batch.segment
        if segment is None:
            return
        with self._lock:
            if segment.file is not None:
                segment.file.write(b"%s %d\n" % (_DONE, batch.seq))
                segment.file.flush()
            else:  # an older segment (recovered, or rolled over): append its mark there
                with open(segment.path, "ab") as f:
                    f.write(b"%s %d\n" % (_DONE, batch.seq))
            segment.open_batches -= 1
            self._drop_if_done(segment)

    def _drop_if_done(self, segment: _Segment) -> None:
        if segment.open_batches <= 0 and segment is not self._current:
            try:
                segment.path.unlink()
            except FileNotFoundError:
                pass
            if segment in self._segments:
                self._segments.remove(segment)

    def close(self) -> None:
        with self._lock:
            if self._current is not None and self._current.file is not None:
                self._current.file.close()
                self._current.file = None
                if self._current.open_batches <= 0:
                    self._current.path.unlink(missing_ok=True)
                    self._segments.remove(self._current)
                self._current = None
        self._lockfile.close()


def _records(path: Path) -> Iterator[tuple[bytes, int, int, int]]:
    """(kind, seq, body offset, body length) of each complete record of a segment; stops at the
    first torn or unreadable one (a crash mid-write)."""
    data = path.read_bytes()
    pos = 0
    while pos < len(data):
        end = data.find(b"\n", pos)
        if end < 0:
            return
        parts = data[pos:end].split(b" ")
        try:
            if parts[0] == _BATCH and len(parts) == 3:
                seq, length = int(parts[1]), int(parts[2])
                start = end + 1
                if start + length + 1 > len(data) or data[start + length : start + length + 1] != b"\n":
                    return
                yield _BATCH, seq, start, length
                pos = start + length + 1
            elif parts[0] == _DONE and len(parts) == 2:
                yield _DONE, int(parts[1]), 0, 0
                pos = end + 1
            else:
                return
        except ValueError:
            return
