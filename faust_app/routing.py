"""Routing decisions: pure functions from a raw Kafka record to the record to write."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any

from questlog.catalog import Catalog, parse_timestamp, validate


@dataclass(frozen=True)
class Source:
    topic: str
    partition: int
    offset: int


@dataclass(frozen=True)
class Routed:
    topic: str
    key: bytes | None
    value: bytes
    reason: str | None = None  # set for dead letters

    @property
    def dead(self) -> bool:
        return self.reason is not None


# A dead letter embeds the raw payload as a JSON string (escaping can double its size); beyond this
# many characters it is cut, and the reason says so, so that the record fits a Kafka message.
MAX_RAW_CHARS = 400_000


def _dumps(obj: Any) -> bytes:
    return json.dumps(obj, separators=(",", ":")).encode()  # ASCII: lone surrogates stay escaped


def route(raw: bytes | None, source: Source, catalog: Catalog, raw_topic: str, dlq_topic: str,
          now: datetime | None = None) -> Routed:
    """Decide where one raw record goes: its typed topic if it is valid, else a dead letter that
    carries every reason, the raw payload and where it came from. Never raises."""
    raw = raw or b""
    try:
        event = json.loads(raw)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return dead_letter(raw, None, f"payload is not valid JSON: {exc}", source, dlq_topic, now)
    errors = validate(event, catalog)
    if errors:
        return dead_letter(raw, event, "; ".join(errors), source, dlq_topic, now)
    try:
        key = event["event_id"].encode()
    except UnicodeEncodeError:
        return dead_letter(raw, None, "field 'event_id': not valid Unicode (an unpaired surrogate escape)",
                           source, dlq_topic, now)
    et = catalog.types[event["event_type"]]
    for f in et.columns:  # one spelling of time that every reader (Spark, Trino) parses alike
        if f.type == "timestamp" and event.get(f.name) is not None:
            event[f.name] = parse_timestamp(event[f.name]).isoformat(timespec="milliseconds")
    event["schema_version"] = et.version
    return Routed(f"{raw_topic}.{et.name}", key, _dumps(event))


def dead_letter(raw: bytes, event: Any, reason: str, source: Source, dlq_topic: str,
                now: datetime | None = None) -> Routed:
    now = now or datetime.now(timezone.utc)
    text = raw.decode("utf-8", errors="replace")
    if len(text) > MAX_RAW_CHARS:
        reason += f" (raw payload cut to its first {MAX_RAW_CHARS} of {len(text)} characters)"
        text = text[:MAX_RAW_CHARS]
    record: dict[str, Any] = {
        "reason": reason,
        "raw": text,
        "source_topic": source.topic,
        "source_partition": source.partition,
        "source_offset": source.offset,
        "failed_at": now.isoformat(timespec="milliseconds"),
    }
    if isinstance(event, dict):
        for key in ("event_id", "event_type"):
            if isinstance(event.get(key), str) and len(event[key]) <= 256:
                record[key] = event[key]
        received = event.get("received_at")
        if isinstance(received, str) and parse_timestamp(received) is not None:
            record["received_at"] = received
    key = f"{source.topic}:{source.partition}:{source.offset}".encode()
    return Routed(dlq_topic, key, _dumps(record), reason)
