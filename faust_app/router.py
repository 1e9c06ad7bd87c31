"""The router's work on each batch the agent takes: route every event, deliver every copy through
Faust's producer, and return only once Kafka confirmed them all (the agent then acks the batch).

The guarantee, and why it holds:
- A raw record is acked (and so committed by Faust) only after every typed copy and dead letter
  made from it is confirmed by Kafka (acks=all, idempotent producer): ``handle`` returns only then,
  and the agent acks the batch's events after it returns, in offset order (Faust commits the end of
  the first unbroken run of acked offsets, and must never see k+1 acked while k is not:
  faust-streaming#606). A crash at any point re-delivers the batch (at least once); the sink's dedupe
  by event_id (and by source offset and index for dead letters) makes the rows exactly once.
- A failed delivery is sorted: permanent refusals of a record (too large, a topic name Kafka
  refuses, unserialisable) turn the record into a dead letter, or for a dead letter into a smaller
  one; transient trouble (broker away, timeouts, leader changes) is retried with backoff, never
  given up and never acked meanwhile. A topic that cannot be created costs only its own records.

Speed, and why this shape (measured on this 2-core machine beside the rest of the stack; `make bench
CASE=router` has the current figures, README Performance the last full run's). Faust's cost is per
Kafka message: its fetch loop, conductor, channel and stream hand each message on through a few
tasks and queues. A do-nothing agent that awaits ``topic.send`` per message forwarded 1,221-4,143
messages/s in the bench runs of 2026-12-07. So:
- one raw record carries one collector request (``faust_app.routing.route_record``; the collector's
  ``producer.envelope.to_records``), as Snowplow's collector payloads do: a client's batch of 100-500
  events costs Faust one message, and the router then spends its time on its own per-event work
  (validation ~9 us, one ``producer.send`` each through Faust's producer, Kafka's murmur2
  partitioner): 18,503-23,760 events/s of client batches per worker in `make bench`, against
  4,226-8,253 for single-event GET records (Faust's per-message cost dominates there);
- the agent takes events with ``noack_take`` (up to 1,000 records, or what came within 50 ms),
  sends every copy before awaiting any (one round trip a chunk, not an event), and acks after:
  ``take()`` would ack a batch that failed (its ``finally``), a plain ``async for`` acks each event
  before its copy is confirmed;
- Faust's producer batches (``producer_linger`` 5 ms, ``producer_max_batch_size`` one record
  limit); a lean Monitor (``faust_app.app.LeanMonitor``) drops Faust's per-event statistics;
- Python's cyclic garbage collector runs far less often once the agent starts, and never over
  what the start made (``faust_app.app.tune_gc``): with Python's defaults it took ~20% of a
  router's time draining client batches;
- memory: a batch is routed and delivered in chunks of 2 MB of raw records; Faust's fetch stays at
  its default 1 MiB a partition (4 MiB: peak RSS 326-338 MiB instead of 180 MiB draining client
  batches, for no measured gain) and its stream buffer at 1,024 records (whole requests, up to
  ``QUESTLOG_MAX_BODY_BYTES`` each).
Tried and left: delivering batch k+1 while batch k is in flight (4 in flight: 5,648 vs 5,594
single-event records/s, no gain for its complexity); uvloop as Faust's loop (``-L uvloop``: 9,079
and 9,427 vs 9,838 and 7,509 events/s single-event, 24,088 vs 25,936 on client batches: noise); a
faster murmur2 in Python (reading words with ``struct``: no faster than aiokafka's).
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass

import prometheus_client as prom
from aiokafka import errors as kafka_errors

from faust_app.routing import Routed, Source, dead_letter, loads, route_record
from faust_app.sessions import ActivityFeed
from questlog.catalog import Catalog
from questlog.privacy import Suppressions
from questlog.settings import Settings

log = logging.getLogger(__name__)

# Served at GET /metrics on Faust's web server (faust_app.app). One worker is one process: its
# figures are its own partitions'; Prometheus sums the workers.
ROUTED = prom.Counter(
    "questlog_router_events_routed_total", "Raw events written to their typed topic, by type.", ["event_type"]
)
DEAD_LETTERS = prom.Counter(
    "questlog_router_dead_letters_total",
    "Raw events written to the dead letters, by reason code (questlog.deadletters.REASON_CODES).",
    ["reason_code"],
)
BATCH_SECONDS = prom.Histogram(
    "questlog_router_batch_seconds",
    "Time to route and deliver one batch of raw records.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_EVENTS = prom.Histogram(
    "questlog_router_batch_events", "Raw events per batch.", buckets=(1, 10, 100, 500, 1000, 2500, 5000, 25000)
)
LAG_RECORDS = prom.Gauge(
    "questlog_router_lag_records", "Raw records not routed yet on this worker's partitions (as of its last batch)."
)
SUPPRESSED = prom.Counter(
    "questlog_router_suppressed_total",
    "Raw events of forgotten players (questlog forget) dropped: written to no topic.",
)
SUPPRESSION_LIST = prom.Gauge("questlog_router_suppressed_players", "Forget requests the router checks events against.")
LAG_SECONDS = prom.Gauge(
    "questlog_router_lag_seconds", "Age of the oldest raw record of the batch being routed; 0 when caught up."
)

# Broker refusals of a record (or of a topic) that no retry can change.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    kafka_errors.TopicAuthorizationFailedError,
    TypeError,  # not bytes: an error of ours, but retrying would not help
    ValueError,
    UnicodeError,
)


def cause(exc: BaseException) -> BaseException:
    """The Kafka error behind Faust's wrapper (``ProducerSendError`` keeps it as its cause)."""
    while exc.__cause__ is not None and not isinstance(exc, kafka_errors.KafkaError):
        exc = exc.__cause__
    return exc


def is_permanent(exc: BaseException) -> bool:
    """True if Kafka refused this record for good; everything else is worth another try."""
    return isinstance(cause(exc), PERMANENT_ERRORS)


def backoff_s(attempt: int, first: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``first`` up to ``cap``."""
    return min(cap, first * 2 ** (attempt - 1))


@dataclass
class Item:
    """One raw event and where routing sent it."""

    raw: bytes | None  # its payload as read; None for an item of an array (``out`` has it)
    source: Source
    out: Routed
    solo: bool = False  # sent and awaited alone (after a refusal that may have been another record's)
    bare: bool = False  # a dead letter already without its payload: nothing smaller to write


def refused(item: Item, exc: BaseException, settings: Settings, limit: int) -> Routed:
    """The record to write instead of ``item.out``, which Kafka refused for good: a dead letter
    saying why; for a refused dead letter, one without the raw payload."""
    why = f"Kafka refused the record for {item.out.topic}: {cause(exc)!r}"
    if item.out.dead:
        out = dead_letter(
            b"",
            None,
            f"{item.out.reason}; {why}; the raw payload was dropped, see the source offset",
            item.source,
            settings.dlq_topic,
            limit=limit,
            code=item.out.code,  # still why it is a dead letter
        )
    else:
        raw = item.raw if item.raw is not None else item.out.value  # an array's item: the event as routed
        try:
            event = loads(raw)
        except ValueError:
            event = None
        out = dead_letter(raw, event, why, item.source, settings.dlq_topic, limit=limit, code="kafka_refused")
    return out


Send = Callable[[str, bytes | None, bytes], Awaitable[Awaitable]]
"""``send(topic, key, value)``: hands a record to the producer, returns its delivery future."""
Ensure = Callable[[str], Awaitable[None]]
"""``ensure(topic)``: creates the topic if it does not exist; raises if Kafka refuses."""


class Router:
    """Routes batches of raw records. ``catalog`` returns the catalog in use (reloaded when the
    deployed one changes), ``refresh`` looks at the deployed file now; ``send`` and ``ensure`` are
    Faust's producer and topic declaration (``faust_app.app``)."""

    summary_every_s = 10.0
    chunk_bytes = 2_000_000  # of raw records routed and delivered at once: ~5,000 events

    def __init__(
        self,
        settings: Settings,
        catalog: Callable[[], Catalog],
        refresh: Callable[[], Catalog],
        send: Send,
        ensure: Ensure,
        highwater: Callable[[], dict] = dict,
        feed: ActivityFeed | None = None,
        send_activity: Callable[[list[tuple[int, bytes]]], Awaitable[None]] | None = None,
        suppressions: Suppressions | None = None,
    ) -> None:
        self.settings = settings
        self.catalog = catalog
        self.refresh = refresh
        self.send = send
        self.ensure = ensure
        self.highwater = highwater  # {partition: its high watermark} of this worker's raw partitions
        # player activity for agent ``sessions`` (faust_app.sessions): records of a chunk's valid
        # events, delivered beside its typed copies; None with sessions off
        self.feed = feed
        self.send_activity = send_activity
        # forgotten players (questlog.privacy): their events go nowhere; personal fields are hashed
        self.suppressions = suppressions
        self._next: dict = {}  # per raw partition, the next offset to route (for the lag)
        self.limit = settings.max_record_bytes
        self._topics: set[str] = set()  # known to exist
        self.counts: Counter[str] = Counter()
        self._since_summary = time.monotonic()
        self._sample: str | None = None  # one dead letter's reason, for the next summary

    async def prepare(self) -> None:
        """Make sure of every topic the deployed catalog routes to, once, as the worker starts (a
        topic Kafka refuses is logged here; its events become dead letters when they come)."""
        s = self.settings
        for topic in self.catalog().topics(s.raw_topic, s.dlq_topic)[1:]:
            try:
                await self.ensure(topic)
                self._topics.add(topic)
            except Exception as exc:
                log.error("topic %s: %r; its events become dead letters until it can be created", topic, cause(exc))

    async def handle(self, records: Iterable[tuple[bytes | None, Source]]) -> int:
        """Route and deliver every event of ``records`` (raw value, where it was read); returns once
        Kafka confirmed every copy, with how many events there were. Routed and delivered in chunks of
        about ``chunk_bytes`` of raw records, so that a batch of large records holds little in memory
        at once."""
        started = time.monotonic()
        total = 0
        chunk: list[tuple[bytes | None, Source]] = []
        size = 0
        for raw, source in records:
            chunk.append((raw, source))
            size += len(raw or b"")
            if size >= self.chunk_bytes:
                total += await self._handle_chunk(chunk)
                chunk, size = [], 0
        if chunk:
            total += await self._handle_chunk(chunk)
        BATCH_SECONDS.observe(time.monotonic() - started)
        BATCH_EVENTS.observe(total)
        self._summarise()
        return total

    async def _handle_chunk(self, records: list[tuple[bytes | None, Source]]) -> int:
        items = self.route(records)
        if self.feed is None or self.send_activity is None:
            await self.deliver(items)
        else:
            activity = self.feed.records(item.out.event for item in items if item.out.event is not None)
            await asyncio.gather(self.deliver(items), self.send_activity(activity))
        self._count(items)
        return len(items)

    def route(self, records: list[tuple[bytes | None, Source]]) -> list[Item]:
        if self.suppressions is not None:
            self.suppressions.refresh()  # one stat a chunk; a reload when a request came or changed
            SUPPRESSION_LIST.set(len(self.suppressions))
        catalog = self.catalog()
        items = self._route(records, catalog)
        if any(item.out.dead for item in items) and self.refresh() is not catalog:
            # The collector may know a just-deployed type or field before our cached catalog:
            # route the batch again with the new one.
            items = self._route(records, self.catalog())
        return items

    def _route(self, records: list[tuple[bytes | None, Source]], catalog: Catalog) -> list[Item]:
        s = self.settings
        args = (catalog, s.raw_topic, s.dlq_topic, None, self.limit, s.max_batch_events)
        sup = self.suppressions
        drop = sup.matches if sup is not None and len(sup) else None
        hasher = sup.hasher if sup is not None else None
        items = [
            Item(raw if at.index is None else None, at, out)
            for raw, source in records
            for at, out in route_record(raw, source, *args, drop=drop, hasher=hasher)
        ]
        kept = [item for item in items if not item.out.suppressed]
        if len(kept) < len(items):
            SUPPRESSED.inc(len(items) - len(kept))
        return kept

    async def deliver(self, items: list[Item]) -> None:
        """Write every item's record; return once Kafka confirmed them all. Permanent refusals
        become dead letters; transient failures are retried with backoff, never given up."""
        attempt = 0
        pending = items
        while pending:
            failures = await self._send(pending)
            if not failures:
                break
            retry: list[Item] = []
            transient: BaseException | None = None
            for item, error in failures:
                retry.append(item)
                if not is_permanent(error) or item.bare:
                    # Transient; or the dead letters' own topic refuses even a bare dead letter (a
                    # setting to fix, e.g. QUESTLOG_DLQ_TOPIC): nothing to give up to, so retried.
                    transient = error
                elif not item.solo:  # maybe another record's refusal shared by its batch: alone now
                    item.solo = True
                else:
                    log.error("dead letter for %s: %s", item.source, cause(error))
                    item.bare = item.out.dead
                    item.out = refused(item, error, self.settings, self.limit)
            if transient is not None:
                attempt += 1
                wait = backoff_s(attempt)
                log.warning(
                    "Kafka did not confirm %d records (%r); retrying in %.1fs (attempt %d); their raw "
                    "events stay unacknowledged",
                    len(retry),
                    cause(transient),
                    wait,
                    attempt,
                )
                await asyncio.sleep(wait)
            pending = retry

    async def _send(self, items: list[Item]) -> list[tuple[Item, BaseException]]:
        """Send every item (each solo one alone, awaited before the next), await every delivery;
        every failure, per item."""
        failures: list[tuple[Item, BaseException]] = []
        unknown = {item.out.topic for item in items} - self._topics
        refused_topics: dict[str, BaseException] = {}
        for topic in sorted(unknown):
            try:
                await self.ensure(topic)
                self._topics.add(topic)
            except Exception as exc:  # its records fail with it; the other topics go on
                refused_topics[topic] = exc
        sent: list[tuple[Item, Awaitable]] = []
        for item in items:
            out = item.out
            if out.topic in refused_topics:
                failures.append((item, refused_topics[out.topic]))
                continue
            try:
                future = await self.send(out.topic, out.key, out.value)
                if item.solo:
                    await future
                else:
                    sent.append((item, future))
            except Exception as exc:
                failures.append((item, exc))
        results = await asyncio.gather(*(future for _, future in sent), return_exceptions=True)
        for (item, _), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failures.append((item, result))
        return failures

    def observe_lag(self, events=()) -> None:
        """The lag gauges as a batch of Faust events begins (or, with none, between batches): the
        records behind are the partitions' high watermarks minus the next offset to route; the age
        is the batch's oldest record's."""
        first: dict = {}
        for event in events:
            first.setdefault(event.message.tp, event.message.offset)
        self._next.update(first)
        high = self.highwater()
        behind = sum(max(0, h - self._next[tp]) for tp, h in high.items() if h is not None and tp in self._next)
        LAG_RECORDS.set(behind)
        if events:
            LAG_SECONDS.set(max(0.0, time.time() - min(e.message.timestamp for e in events)))
            for event in events:
                self._next[event.message.tp] = event.message.offset + 1
        elif behind == 0:
            LAG_SECONDS.set(0)

    def _count(self, items: list[Item]) -> None:
        routed: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        for item in items:
            if item.out.dead:
                dead[item.out.code or "other"] += 1
                if self._sample is None:
                    where = f"{item.source.topic}[{item.source.partition}]@{item.source.offset}"
                    if item.source.index is not None:
                        where += f"#{item.source.index}"
                    self._sample = f"{where}: {item.out.reason}"
            else:
                routed[item.out.topic] += 1
        self.counts.update(routed)
        if dead:
            self.counts["dead letters"] += sum(dead.values())
        prefix = self.settings.raw_topic + "."
        for topic, n in routed.items():
            ROUTED.labels(topic[len(prefix) :] if topic.startswith(prefix) else topic).inc(n)
        for cls, n in dead.items():
            DEAD_LETTERS.labels(cls).inc(n)

    def _summarise(self) -> None:
        now = time.monotonic()
        if now - self._since_summary < self.summary_every_s or not self.counts:
            return
        took = now - self._since_summary
        total = sum(self.counts.values())
        log.info(
            "routed %d events in %.0fs (%.0f/s): %s",
            total,
            took,
            total / took,
            ", ".join(f"{name} {n}" for name, n in sorted(self.counts.items())),
        )
        if self._sample:
            log.warning("a dead letter among them: %.500s", self._sample)
        self.counts.clear()
        self._sample = None
        self._since_summary = now
