"""The router's hot path: raw events in batches, routed, delivered, then committed.

Why batches and not a Faust agent: Faust's stream path hands each message through its conductor,
a channel and the stream iterator, a few asyncio tasks per message. Measured on this 2-core
machine (200,000 raw events, one worker): an agent with ``stream.noack_take(2000)``, sending
through ``topic.send`` and acking after ``asyncio.gather``, routed 4,115 events/s; the same with
aiokafka's own ``send`` 6,725/s. The router needs 20,000. So the Faust worker hosts this service
(its lifecycle, CLI, logging and web server) and the service reads the raw topic with Faust's
Kafka client, aiokafka, one consumer in the group ``QUESTLOG_ROUTER_ID``: ``getmany`` returns
thousands of records at once, and each output partition gets one record batch (aiokafka's
``create_batch``/``send_batch``), instead of one ``send`` per event.

The guarantee, and why it holds:
- A raw record's offset is committed only after its typed copy or dead letter is confirmed by
  Kafka (acks=all): a batch is routed, every output batch is sent, every delivery is awaited,
  and only then are the batch's offsets committed. A crash at any point re-delivers the batch
  (at least once); the sink's dedupe by event_id (and by source offset for dead letters) makes
  the rows exactly once.
- A failed delivery is sorted: permanent refusals of a record (too large, invalid topic name,
  unserialisable) turn the record into a dead letter, or for a dead letter into a smaller one;
  transient trouble (broker away, timeouts, leader changes) is retried with backoff, without
  committing and without exiting. Nothing is acknowledged that was not delivered.
- A rebalance waits for the batch in flight (the lock): its offsets are committed while the
  partitions are still ours, so the next owner starts after them.
"""

from __future__ import annotations

import asyncio
import logging
import time
import zlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import mode
import prometheus_client as prom
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener, TopicPartition
from aiokafka import errors as kafka_errors

from faust_app.routing import Routed, Source, dead_letter, loads, route
from questlog.catalog import Catalog
from questlog.kafka_admin import ensure_topics
from questlog.settings import Settings
from questlog.status import reason_class

log = logging.getLogger(__name__)

# Served at GET /metrics on Faust's web server (faust_app.app). One worker is one process: its
# figures are its own partitions'; Prometheus sums the workers.
ROUTED = prom.Counter(
    "questlog_router_events_routed_total", "Raw events written to their typed topic, by type.", ["event_type"]
)
DEAD_LETTERS = prom.Counter(
    "questlog_router_dead_letters_total",
    "Raw events written to the dead letters, by reason class (questlog.status.reason_class).",
    ["reason_class"],
)
BATCH_SECONDS = prom.Histogram(
    "questlog_router_batch_seconds",
    "Time to route, deliver and commit one batch of raw events.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
BATCH_EVENTS = prom.Histogram(
    "questlog_router_batch_events", "Raw events per batch.", buckets=(1, 10, 100, 500, 1000, 2500, 5000)
)
LAG_RECORDS = prom.Gauge(
    "questlog_router_lag_records", "Raw records not routed yet on this worker's partitions (as of its last fetch)."
)
LAG_SECONDS = prom.Gauge(
    "questlog_router_lag_seconds", "Age of the oldest raw record not routed yet when it was fetched; 0 when caught up."
)

# Broker refusals of a record that no retry can change.
PERMANENT_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.MessageSizeTooLargeError,
    kafka_errors.RecordListTooLargeError,
    kafka_errors.InvalidTopicError,
    TypeError,  # not bytes: an error of ours, but retrying would not help
    ValueError,
    UnicodeError,
)
# Errors after which the producer itself cannot go on: it is replaced before the next attempt.
FATAL_PRODUCER_ERRORS: tuple[type[BaseException], ...] = (
    kafka_errors.OutOfOrderSequenceNumber,
    kafka_errors.IllegalStateError,
    kafka_errors.ProducerClosed,
    kafka_errors.ProducerFenced,
)


def is_permanent(exc: BaseException) -> bool:
    """True if Kafka refused this record for good; everything else is worth another try."""
    return isinstance(exc, PERMANENT_ERRORS)


def backoff_s(attempt: int, first: float = 0.1, cap: float = 10.0) -> float:
    """Seconds to wait before retry ``attempt`` (1, 2, ...): doubling from ``first`` up to ``cap``."""
    return min(cap, first * 2 ** (attempt - 1))


@dataclass
class Item:
    """One raw record and where routing sent it."""

    raw: bytes
    source: Source
    out: Routed
    solo: bool = False  # sent in a batch of its own (after its batch was refused whole)


def refused(item: Item, exc: BaseException, settings: Settings, limit: int) -> Item:
    """The record to write instead of ``item.out``, which Kafka refused for good: a dead letter
    saying why; for a refused dead letter, one without the raw payload."""
    why = f"Kafka refused the record for {item.out.topic}: {exc!r}"
    if item.out.dead:
        out = dead_letter(
            b"",
            None,
            f"{item.out.reason}; {why}; the raw payload was dropped, see the source offset",
            item.source,
            settings.dlq_topic,
            limit=limit,
        )
    else:
        try:
            event = loads(item.raw)
        except ValueError:
            event = None
        out = dead_letter(item.raw, event, why, item.source, settings.dlq_topic, limit=limit)
    return Item(item.raw, item.source, out, solo=True)


class _WaitForBatch(ConsumerRebalanceListener):
    def __init__(self, lock: asyncio.Lock) -> None:
        self.lock = lock

    async def on_partitions_revoked(self, revoked) -> None:
        async with self.lock:  # the batch in flight is delivered and committed first
            pass

    async def on_partitions_assigned(self, assigned) -> None:
        log.info("routing %s", ", ".join(f"{tp.topic}[{tp.partition}]" for tp in sorted(assigned)) or "nothing")


class Router(mode.Service):
    """Routes the raw topic until stopped. ``catalog`` returns the catalog in use (reloaded when
    the deployed one changes), ``refresh`` looks at the deployed file now."""

    max_records = 5000  # per batch: enough to amortise each round trip, small for rebalances
    summary_every_s = 10.0

    def __init__(
        self, settings: Settings, catalog: Callable[[], Catalog], refresh: Callable[[], Catalog], limit: int, **kwargs
    ) -> None:
        super().__init__(**kwargs)
        self.settings = settings
        self.catalog = catalog
        self.refresh = refresh
        self.limit = limit
        self._lock = asyncio.Lock()
        self._topics: set[str] = set()
        self._partitions: dict[str, int] = {}
        self.consumer: AIOKafkaConsumer | None = None
        self.producer: AIOKafkaProducer | None = None
        self.counts: Counter[str] = Counter()
        self._since_summary = time.monotonic()
        self._sample: str | None = None  # one dead letter's reason, for the next summary
        self._next: dict[TopicPartition, int] = {}  # per partition, the next offset to route (for the lag)

    # Lifecycle ----------------------------------------------------------------------------------
    def _new_producer(self) -> AIOKafkaProducer:
        return AIOKafkaProducer(
            bootstrap_servers=self.settings.kafka_bootstrap,
            client_id=f"{self.settings.router_id}-producer",
            acks="all",
            enable_idempotence=True,
            linger_ms=5,
            # a batch holds at most one limit of records; a request may carry a little more (1 MiB
            # for the default limit), as the broker's message.max.bytes (1,048,588) allows
            max_batch_size=self.limit,
            max_request_size=self.limit + 48_576,
        )

    async def on_start(self) -> None:
        s = self.settings
        self.producer = self._new_producer()
        await self.producer.start()
        await self._ensure_topics(self.catalog().topics(s.raw_topic, s.dlq_topic))
        self.consumer = AIOKafkaConsumer(
            bootstrap_servers=s.kafka_bootstrap,
            group_id=s.router_id,
            client_id=f"{s.router_id}-consumer",
            enable_auto_commit=False,
            auto_offset_reset="earliest",
            # A crashed router's partitions go to another worker after this long.
            session_timeout_ms=10_000,
            heartbeat_interval_ms=3_000,
            max_partition_fetch_bytes=4 * 1024 * 1024,
        )
        await self.consumer.start()
        self.consumer.subscribe([s.raw_topic], listener=_WaitForBatch(self._lock))
        log.info(
            "router started: %s -> %s.<event_type> | %s (limit %d bytes a record)",
            s.raw_topic,
            s.raw_topic,
            s.dlq_topic,
            self.limit,
        )
        self.add_future(self._route_forever())

    async def on_stop(self) -> None:
        if self.consumer is not None:
            await self.consumer.stop()
        if self.producer is not None:
            await self.producer.stop()

    # The loop -----------------------------------------------------------------------------------
    async def _route_forever(self) -> None:
        try:
            await self._route_batches()
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            # Nothing routes any more (e.g. a fetch that cannot be decoded): the worker must not
            # stay up looking healthy. It stops with an error; the runner restarts it with backoff
            # and the batch in hand, never committed, is routed again.
            log.critical("routing stopped: %r; stopping the worker", exc, exc_info=True)
            await self.crash(exc)

    async def _route_batches(self) -> None:
        assert self.consumer is not None
        while not self.should_stop:
            records = await self.consumer.getmany(timeout_ms=200, max_records=self.max_records)
            self._observe_lag(records)
            if records:
                started = time.monotonic()
                await self.process(records)
                BATCH_SECONDS.observe(time.monotonic() - started)
                BATCH_EVENTS.observe(sum(len(msgs) for msgs in records.values()))
            self._summarise()

    def _observe_lag(self, records) -> None:
        """The lag gauges, from what a fetch returned: the oldest record of the batch is the oldest
        not yet routed; the records behind it are the partitions' high watermarks minus the batch's
        first offsets (or minus what was already routed, for partitions it has nothing of)."""
        assert self.consumer is not None
        for tp, msgs in records.items():
            self._next[tp] = msgs[0].offset
        behind = 0
        for tp in self.consumer.assignment():
            high = self.consumer.highwater(tp)
            if high is not None and tp in self._next:
                behind += max(0, high - self._next[tp])
        LAG_RECORDS.set(behind)
        if records:
            oldest = min(msgs[0].timestamp for msgs in records.values()) / 1000.0
            LAG_SECONDS.set(max(0.0, time.time() - oldest))
        elif behind == 0:
            LAG_SECONDS.set(0)
        for tp, msgs in records.items():
            self._next[tp] = msgs[-1].offset + 1

    async def process(self, records) -> None:
        """Route, deliver and only then commit one batch (``{TopicPartition: [records]}``)."""
        async with self._lock:
            items = self.route_batch(records)
            await self.deliver(items)
            await self._commit({tp: msgs[-1].offset + 1 for tp, msgs in records.items()})

    def route_batch(self, records) -> list[Item]:
        s, limit = self.settings, self.limit
        used = self.catalog()
        items = [
            Item(m.value or b"", source, route(m.value, source, used, s.raw_topic, s.dlq_topic, limit=limit))
            for tp, msgs in records.items()
            for m in msgs
            for source in (Source(tp.topic, tp.partition, m.offset),)
        ]
        if any(item.out.dead for item in items) and self.refresh() is not used:
            # The collector may know a just-deployed type or field before our cached catalog.
            fresh = self.catalog()
            for item in items:
                if item.out.dead:
                    item.out = route(item.raw, item.source, fresh, s.raw_topic, s.dlq_topic, limit=limit)
        return items

    async def deliver(self, items: list[Item]) -> None:
        """Write every item's record; return once Kafka confirmed them all. Permanent refusals
        become dead letters; transient failures are retried with backoff, never given up."""
        attempt = 0
        pending = items
        while pending:
            failures: list[tuple[Item, BaseException]]
            try:
                await self._ensure_topics({item.out.topic for item in pending})
            except Exception as exc:  # Kafka away while a new topic is created: like a failed send
                failures = [(item, exc) for item in pending]
            else:
                failures = await self._send(pending)
            if not failures:
                break
            retry: list[Item] = []
            transient: BaseException | None = None
            for item, error in failures:
                if is_permanent(error) and item.solo:
                    log.error(
                        "dead letter for %s[%d]@%d: %s",
                        item.source.topic,
                        item.source.partition,
                        item.source.offset,
                        error,
                    )
                    retry.append(refused(item, error, self.settings, self.limit))
                elif is_permanent(error):  # the batch was refused whole: find which record by itself
                    retry.append(Item(item.raw, item.source, item.out, solo=True))
                else:
                    transient = error
                    retry.append(item)
            if transient is not None:
                attempt += 1
                if isinstance(transient, FATAL_PRODUCER_ERRORS):
                    await self._replace_producer()
                wait = backoff_s(attempt)
                log.warning(
                    "Kafka did not confirm %d records (%r); retrying in %.1fs (attempt %d); their raw "
                    "events stay unacknowledged",
                    len(retry),
                    transient,
                    wait,
                    attempt,
                )
                await asyncio.sleep(wait)
            pending = retry
        routed: Counter[str] = Counter()
        dead: Counter[str] = Counter()
        for item in items:
            self.counts["dead letters" if item.out.dead else item.out.topic] += 1
            if item.out.dead:
                dead[reason_class(item.out.reason)] += 1
            else:
                routed[item.out.topic] += 1
            if item.out.dead and self._sample is None:
                self._sample = f"{item.source.topic}[{item.source.partition}]@{item.source.offset}: {item.out.reason}"
        prefix = self.settings.raw_topic + "."
        for topic, n in routed.items():
            ROUTED.labels(topic[len(prefix) :] if topic.startswith(prefix) else topic).inc(n)
        for cls, n in dead.items():
            DEAD_LETTERS.labels(cls).inc(n)

    async def _send(self, items: list[Item]) -> list[tuple[Item, BaseException]]:
        """One record batch per output partition (more if one fills); every failure, per item."""
        producer = self.producer
        assert producer is not None
        groups: list[tuple[str, int, Any, list[Item]]] = []  # aiokafka's BatchBuilder
        open_batches: dict[tuple[str, int], tuple[Any, list[Item]]] = {}
        failures: list[tuple[Item, BaseException]] = []
        for item in items:
            topic, key, value = item.out.topic, item.out.key, item.out.value
            partition = zlib.crc32(key or b"") % self._partitions.get(topic, 1)
            entry = None if item.solo else open_batches.get((topic, partition))
            try:
                if entry is None or entry[0].append(key=key, value=value, timestamp=None) is None:
                    batch = producer.create_batch()
                    batch.append(key=key, value=value, timestamp=None)  # the first record always fits
                    entry = (batch, [])
                    groups.append((topic, partition, batch, entry[1]))
                    if not item.solo:
                        open_batches[(topic, partition)] = entry
                entry[1].append(item)
            except Exception as exc:  # e.g. a value that is not bytes
                failures.append((item, exc))
        sent: list[tuple[asyncio.Future, list[Item]]] = []
        for topic, partition, batch, members in groups:
            try:
                sent.append((await producer.send_batch(batch, topic, partition=partition), members))
            except Exception as exc:
                failures.extend((item, exc) for item in members)
        results = await asyncio.gather(*(fut for fut, _ in sent), return_exceptions=True)
        for (_, members), result in zip(sent, results, strict=True):
            if isinstance(result, BaseException):
                failures.extend((item, result) for item in members)
        return failures

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        assert self.consumer is not None
        try:
            await self.consumer.commit(offsets)
        except Exception as exc:
            # Delivered but not committed: after a rebalance or restart these records are routed
            # again, and their copies are duplicates the sink drops. Later commits cover them.
            log.warning(
                "could not commit offsets %s: %r", {f"{tp.topic}[{tp.partition}]": o for tp, o in offsets.items()}, exc
            )

    async def _ensure_topics(self, topics) -> None:
        missing = [t for t in topics if t not in self._topics]
        if not missing:
            return
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(
            None, ensure_topics, self.settings.kafka_bootstrap, missing, self.settings.topic_partitions
        )
        if self.producer is not None:
            for topic in missing:
                self._partitions[topic] = len(await self.producer.partitions_for(topic))
        self._topics.update(missing)

    async def _replace_producer(self) -> None:
        old, self.producer = self.producer, self._new_producer()
        if old is not None:
            try:
                await old.stop()
            except Exception as exc:
                log.warning("closing the old producer: %r", exc)
        await self.producer.start()
        log.warning("producer replaced after a fatal error")

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
