"""Routing decisions: pure functions from a raw Kafka record to the records to write.

A raw record holds one event (a JSON object), or, as the collector writes a request of several
events, a JSON array of them (one record per request: the router's per-message cost is paid once
per request, as Snowplow's collector payloads do). ``route_record`` returns one record per event:
its typed copy if it is valid, else a dead letter. Whatever a raw record holds (any bytes, any size
the broker took), every record returned fits ``limit`` bytes (key + value). A dead letter that would
be larger keeps its reasons and raw payload cut to fit, and its reason says so, with the raw
payload's size and SHA-256, so that the original can still be found at its source offset (and, in
an array, its index).
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from typing import Any

import orjson

from questlog.catalog import Catalog, dead_letter_key, event_key, parse_timestamp, typed_topic, validate
from questlog.deadletters import REASON_CODES, reason_code
from questlog.privacy import Hasher, pseudonymise


@dataclass(frozen=True)
class Source:
    """Where a raw event was read: its record's topic, partition and offset, and its position in
    the record's array (None for a record that holds one event)."""

    topic: str
    partition: int
    offset: int
    index: int | None = None


@dataclass(frozen=True)
class Routed:
    topic: str
    key: bytes | None
    value: bytes
    reason: str | None = None  # set for dead letters
    code: str | None = None  # and their reason code (questlog.deadletters.REASON_CODES)
    event: dict | None = field(default=None, compare=False, repr=False)  # a typed copy's event (for sessions)

    @property
    def dead(self) -> bool:
        return self.reason is not None

    @property
    def suppressed(self) -> bool:
        return self is SUPPRESSED


# What ``route_event`` returns for a forgotten player's event (``drop``): nothing is written.
SUPPRESSED = Routed("", None, b"")
Drop = Callable[[Any], bool]


# The largest record (key + value) the router writes: below Kafka's default message.max.bytes
# (1048588) with room for the record batch's own headers. QUESTLOG_MAX_RECORD_BYTES sets it.
MAX_RECORD_BYTES = 1_000_000
# A reason longer than this is cut (validation keeps reasons short; this bounds what is left).
MAX_REASON_CHARS = 8_000
# The most events one raw record may hold (QUESTLOG_MAX_BATCH_EVENTS sets it: the collector never
# writes more); a record with more is one dead letter, so a hostile producer's array of a million
# tiny items cannot make a million records.
MAX_RECORD_EVENTS = 1000


def loads(raw: bytes) -> Any:
    """Parse JSON: orjson for speed; the standard library where orjson is stricter (NaN, integers
    beyond 64 bits, escaped unpaired surrogates, UTF-16/32), so that what is accepted stays the same."""
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError:
        return json.loads(raw)


def dumps(obj: Any) -> bytes:
    """Compact UTF-8 JSON. A string holding an unpaired surrogate cannot be UTF-8: such a record is
    written ASCII-escaped instead (``\\udc00``), as the collector does."""
    try:
        return orjson.dumps(obj)
    except (orjson.JSONEncodeError, TypeError):
        return json.dumps(obj, separators=(",", ":")).encode()


# A valid timestamp already spelled as the router writes it (the collector's received_at is).
_CANONICAL_TIME = re.compile(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}[+-]\d\d:\d\d")


def route_record(
    raw: bytes | None,
    source: Source,
    catalog: Catalog,
    raw_topic: str,
    dlq_topic: str,
    now: datetime | None = None,
    limit: int = MAX_RECORD_BYTES,
    max_events: int = MAX_RECORD_EVENTS,
    *,
    drop: Drop | None = None,
    hasher: Hasher | None = None,
) -> list[tuple[Source, Routed]]:
    """Where each event of one raw record goes, with where it was read: a JSON array is one event
    per item (``Source.index`` says which), anything else is one event. Never raises. ``drop``
    says which parsed events are forgotten players' (``SUPPRESSED``: written nowhere); ``hasher``
    rewrites the personal fields of the rest (typed copies and dead letters alike)."""
    raw = raw or b""
    if raw.lstrip()[:1] != b"[":
        return [(source, route(raw, source, catalog, raw_topic, dlq_topic, now, limit, drop=drop, hasher=hasher))]
    try:
        items = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError):
        items = None
    if not isinstance(items, list):  # not JSON after all: one dead letter saying so
        return [(source, route(raw, source, catalog, raw_topic, dlq_topic, now, limit))]
    if not items or len(items) > max_events:
        why = "an empty array: no event" if not items else f"{len(items)} events in one record; at most {max_events}"
        return [(source, dead_letter(raw, None, why, source, dlq_topic, now, limit, code="bad_record"))]
    sources = [replace(source, index=index) for index in range(len(items))]
    return [
        (at, route_event(item, None, at, catalog, raw_topic, dlq_topic, now, limit, drop=drop, hasher=hasher))
        for at, item in zip(sources, items, strict=True)
    ]


def route(
    raw: bytes | None,
    source: Source,
    catalog: Catalog,
    raw_topic: str,
    dlq_topic: str,
    now: datetime | None = None,
    limit: int = MAX_RECORD_BYTES,
    *,
    drop: Drop | None = None,
    hasher: Hasher | None = None,
) -> Routed:
    """Decide where one raw event goes: its typed topic if it is valid, else a dead letter that
    carries every reason, the raw payload and where it came from. Never raises; what it returns
    always fits ``limit`` bytes."""
    raw = raw or b""
    try:
        event = loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return dead_letter(raw, None, f"payload is not valid JSON: {exc}", source, dlq_topic, now, limit, "not_json")
    return route_event(event, raw, source, catalog, raw_topic, dlq_topic, now, limit, drop=drop, hasher=hasher)


def route_event(
    event: Any,
    raw: bytes | None,
    source: Source,
    catalog: Catalog,
    raw_topic: str,
    dlq_topic: str,
    now: datetime | None = None,
    limit: int = MAX_RECORD_BYTES,
    *,
    drop: Drop | None = None,
    hasher: Hasher | None = None,
) -> Routed:
    """``route`` for an event already parsed; ``raw`` is its payload as read, or None for an item
    of an array (its dead letter then carries the item written back as JSON)."""
    if drop is not None and drop(event):
        return SUPPRESSED
    if hasher is not None and isinstance(event, dict) and isinstance(event.get("event_type"), str):
        known = catalog.get(event["event_type"])
        if known is not None and known.pii_rules and pseudonymise(event, known.pii_rules, hasher):
            raw = None  # a dead letter of it carries the event as rewritten, never the raw fields
    errors = validate(event, catalog)
    if errors:
        return dead_letter(
            _raw(raw, event), event, "; ".join(errors), source, dlq_topic, now, limit, reason_code(errors[0])
        )
    try:
        key = event_key(event.get("source"), event["event_id"])
    except UnicodeEncodeError:
        return dead_letter(
            _raw(raw, event),
            None,
            "field 'event_id': not valid Unicode (an unpaired surrogate escape)",
            source,
            dlq_topic,
            now,
            limit,
            "bad_event_id",
        )
    original = raw if raw is not None else dumps(event)  # before the rewrites below, for a dead letter
    et = catalog.types[event["event_type"]]
    for name in et.timestamp_fields:  # one spelling of time that every reader (Spark, Trino) parses alike
        value = event.get(name)
        if value is not None and not _CANONICAL_TIME.fullmatch(value):
            parsed = parse_timestamp(value)
            assert parsed is not None  # validated above
            event[name] = parsed.isoformat(timespec="milliseconds")
    event["schema_version"] = et.version
    value = dumps(event)
    if len(key) + len(value) > limit:
        return dead_letter(
            original,
            event,
            f"the typed copy is {len(key) + len(value)} bytes, over the {limit}-byte "
            "limit of one Kafka record (the router adds schema_version and rewrites timestamps)",
            source,
            dlq_topic,
            now,
            limit,
            "too_large",
        )
    return Routed(typed_topic(raw_topic, et.name), key, value, event=event)


def _raw(raw: bytes | None, event: Any) -> bytes:
    return raw if raw is not None else dumps(event)


def dead_letter(
    raw: bytes,
    event: Any,
    reason: str,
    source: Source,
    dlq_topic: str,
    now: datetime | None = None,
    limit: int = MAX_RECORD_BYTES,
    code: str | None = None,
) -> Routed:
    """The dead letter of ``raw``: reason and its code (``code``, else the reason's, see
    `questlog.deadletters.reason_code`), raw payload (undecodable bytes replaced), source and
    identity; cut to fit ``limit`` bytes if it would not."""
    now = now or datetime.now(UTC)
    code = code if code in REASON_CODES else reason_code(reason)
    record: dict[str, Any] = {
        "reason": reason,
        "reason_code": code,
        "raw": raw.decode("utf-8", errors="replace"),
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "failed_at": now.isoformat(timespec="milliseconds"),
    }
    if source.index is not None:
        record["source_index"] = source.index
    if isinstance(event, dict):
        for name in ("event_id", "event_type"):
            if isinstance(event.get(name), str) and len(event[name]) <= 256:
                record[name] = event[name]
        received = event.get("received_at")
        if isinstance(received, str) and len(received) <= 64 and parse_timestamp(received) is not None:
            record["received_at"] = received
    key = dead_letter_key(source.topic, source.partition, source.offset, source.index)
    value = dumps(record)
    if len(key) + len(value) > limit or len(reason) > MAX_REASON_CHARS:
        record = _cut_to_fit(record, raw, limit - len(key))
        value = dumps(record)
    return Routed(dlq_topic, key, value, record["reason"], code)


def _cut_to_fit(record: dict[str, Any], raw: bytes, limit: int) -> dict[str, Any]:
    """``record`` with its reason and raw payload cut so that it encodes to at most ``limit``
    bytes; the reason says what was cut, the raw payload's size and its SHA-256."""
    reason, text = record["reason"], record["raw"]
    cut_reason = reason if len(reason) <= MAX_REASON_CHARS else reason[:MAX_REASON_CHARS] + "..."
    empty = dumps({**record, "reason": cut_reason, "raw": ""})

    def note(kept: int) -> str:
        parts = [
            f"raw payload cut to its first {kept} of {len(text)} characters" if kept < len(text) else "",
            f"reason cut to its first {MAX_REASON_CHARS} of {len(reason)} characters"
            if len(reason) > MAX_REASON_CHARS
            else "",
        ]
        what = "; ".join(p for p in parts if p)
        return (
            f" [dead letter cut to fit the {limit}-byte limit of one Kafka record: {what}; the raw payload "
            f"was {len(raw)} bytes, sha256 {hashlib.sha256(raw).hexdigest()}]"
        )

    # The longest prefix of the payload that fits beside the rest (its JSON escaping can make it
    # up to 6 bytes a character): a binary search over the encoded size.
    room = limit - len(empty) - len(dumps(note(0))) - 16  # 16: the digits of the kept count
    lo, hi = 0, min(len(text), max(room, 0))
    while lo < hi:
        mid = (lo + hi + 1) // 2
        if len(dumps(text[:mid])) - 2 <= room:
            lo = mid
        else:
            hi = mid - 1
    return {**record, "reason": cut_reason + note(lo), "raw": text[:lo]}
