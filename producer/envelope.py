"""Building the event envelope and the Kafka records of a request: pure functions, no Flask
request or Kafka in sight."""

from __future__ import annotations

import functools
import ipaddress
import json
import os
from collections.abc import Callable, Mapping
from datetime import UTC, datetime
from typing import Any

import orjson

from questlog.catalog import EVENT_ID_RULE, Catalog, event_key, short_name, valid_event_id

# The only request headers that reach an event, and the field each one fills. A header can never
# set any other field: the seed's `event.update(request.headers)` let a client overwrite
# `event_type` by sending a header, which we never do.
HEADER_FIELDS: Mapping[str, str] = {"Host": "host", "User-Agent": "user_agent", "Accept": "accept"}

# Longest of those headers that is recorded. Each is copied into every event of a request, so a
# megabyte User-Agent on a batch of 1,000 events would be a gigabyte to serialise: refused (431).
# Real ones are far shorter (a browser's User-Agent and Accept are 100-300 characters; a host name
# is at most 253).
MAX_HEADER_CHARS = 1024

# The most bytes a request may make Kafka store in the raw topic, as a multiple of the request's
# own bytes (request_bytes()): a batch of 1,000 events of nothing but their type (the smallest a
# client can send) is 8.6x once each has its envelope, a client's usual batch 1.8x, a seed GET
# 2.8x; 1,000 copies of long headers would be 90x and more, and is refused (413).
MAX_AMPLIFICATION = 10


def request_bytes(environ: Mapping[str, Any], body_bytes: int) -> int:
    """About what a request cost its sender: its body, path, query string and headers (names and
    values, as WSGI gives them)."""
    size = body_bytes + len(environ.get("PATH_INFO", "")) + len(environ.get("QUERY_STRING", "")) + 16
    for key, value in environ.items():
        if key.startswith("HTTP_") and isinstance(value, str):
            size += len(key) - 5 + len(value) + 4  # `Name: value\r\n`
    return size + len(environ.get("CONTENT_TYPE", "")) + len(environ.get("CONTENT_LENGTH", ""))


class TooAmplified(ValueError):
    """A request whose records would be more than MAX_AMPLIFICATION times its own size."""

    def __init__(self, stored: int, size: int) -> None:
        super().__init__(
            f"this request would make Kafka store {stored} bytes, {stored / size:.0f} times its own {size}; "
            f"at most {MAX_AMPLIFICATION} times: send fewer events per request, or shorter headers"
        )


# Fields only Questlog sets (the collector, or the router for schema_version); a client value for
# them is replaced, not trusted.
SERVER_FIELDS = frozenset({"received_at", "schema_version", "source", *HEADER_FIELDS.values()})

DEFAULT_SOURCE = "default"


class RejectedEvent(ValueError):
    """The input cannot become an event at all; the message is the reason the client sees."""


class EventTooLarge(ValueError):
    """An event, once enveloped and serialised, is larger than a Kafka record may be."""

    def __init__(self, index: int, size: int, limit: int) -> None:
        super().__init__(f"event {index} is {size} bytes once enveloped; at most {limit}")
        self.index, self.size, self.limit = index, size, limit


def utc_now() -> str:
    return datetime.now(UTC).isoformat(timespec="milliseconds")


def client_context(headers: Mapping[str, str]) -> dict[str, str | None]:
    return {field: headers.get(header) for header, field in HEADER_FIELDS.items()}


# The same headers as WSGI names them: read from the environ directly, as this runs per request.
_ENVIRON_FIELDS = tuple(("HTTP_" + header.upper().replace("-", "_"), field) for header, field in HEADER_FIELDS.items())


def environ_context(environ: Mapping[str, str]) -> dict[str, str | None]:
    """client_context() from a WSGI environ."""
    return {field: environ.get(key) for key, field in _ENVIRON_FIELDS}


def oversized_header(context: Mapping[str, str | None]) -> str | None:
    """The first recorded header longer than MAX_HEADER_CHARS, or None."""
    for header, field in HEADER_FIELDS.items():
        value = context.get(field)
        if value is not None and len(value) > MAX_HEADER_CHARS:
            return header
    return None


@functools.lru_cache(maxsize=4096)  # every event of a request, and a player's every request, share one
def user_from_host(host: str | None) -> str | None:
    """The seed's convention: the player is the first label of the Host header when it names a
    host under a domain (`user1.comcast.com` -> `user1`); None for IPs and short names."""
    if not host:
        return None
    name = host.rsplit(":", 1)[0] if host.count(":") == 1 else host
    try:
        ipaddress.ip_address(name.strip("[]"))
        return None
    except ValueError:
        pass
    labels = name.split(".")
    return labels[0] if len(labels) >= 3 and labels[0] else None


def new_event_ids(n: int) -> list[str]:
    """``n`` random (version 4) UUIDs as text, cut from one read of the OS's random source:
    several times cheaper per id than ``uuid.uuid4()``."""
    h = os.urandom(16 * n).hex()
    return [
        f"{h[i : i + 8]}-{h[i + 8 : i + 12]}-4{h[i + 13 : i + 16]}-{'89ab'[int(h[i + 16], 16) & 3]}"
        f"{h[i + 17 : i + 20]}-{h[i + 20 : i + 32]}"
        for i in range(0, 32 * n, 32)
    ]


def _shown(value: Any) -> str:
    """A client's value in a reason, cut short whatever its size."""
    if isinstance(value, str):
        return short_name(value)
    if isinstance(value, (list, dict)) and len(value) > 4:
        value = value[:4] if isinstance(value, list) else dict(list(value.items())[:4])
    text = repr(value)
    return text if len(text) <= 64 else text[:61] + "..."


def build_envelope(
    body: Any,
    catalog: Catalog,
    context: Mapping[str, str | None],
    received_at: str,
    event_type: str | None = None,
    *,
    source: str = DEFAULT_SOURCE,
    new_id: str | None = None,
) -> dict[str, Any]:
    """Wrap one client event in the envelope.

    ``body`` is the client's JSON object (or the query parameters of a GET route); ``event_type``
    is set by a route and wins over the body; ``source`` is the sender's (from its write key);
    ``new_id`` is the event_id to use if the client sent none (one is made otherwise). Raises
    RejectedEvent if ``body`` cannot be an event (not an object, unknown type, an event_id that
    breaks the rule). Field-level problems are left for the router, which turns them into dead
    letters that can be replayed once the catalog is fixed.
    """
    if not isinstance(body, dict):
        raise RejectedEvent(f"an event must be a JSON object, got {type(body).__name__}")
    name = event_type if event_type is not None else body.get("event_type")
    if not isinstance(name, str) or name not in catalog:
        raise RejectedEvent(f"unknown event_type {_shown(name)}; known types: {', '.join(catalog.names)}")
    event_id = body.get("event_id")
    if event_id is None:
        event_id = new_id if new_id is not None else new_event_ids(1)[0]
    elif not valid_event_id(event_id):
        raise RejectedEvent(f"event_id must be {EVENT_ID_RULE}, got {type(event_id).__name__} {_shown(event_id)}")
    # Built in ENVELOPE's order (tests hold it to that), then the type's own fields in the order
    # the client sent them; written out rather than sorted, as this runs for every event.
    event = {"event_id": event_id, "source": source, "event_type": name, "received_at": received_at}
    if "client_ts" in body:
        event["client_ts"] = body["client_ts"]
    user = body.get("user_id")
    if user is None:
        user = user_from_host(context.get("host"))
    if user is not None or "user_id" in body:
        event["user_id"] = user
    event.update(context)
    for key, value in body.items():
        if key not in _PLACED:
            event[key] = value
    return event


# What build_envelope() has placed (or refuses) before a body's own fields: one set to look in
# per field, as this runs for every field of every event.
_PLACED = frozenset({"event_id", "source", "event_type", "received_at", "client_ts", "user_id", *SERVER_FIELDS})


def _stdlib_dumps(event: dict[str, Any]) -> bytes:
    return json.dumps(event, ensure_ascii=False, separators=(",", ":")).encode()


def fast_dumps(event: dict[str, Any]) -> bytes:
    """orjson, or the standard library for what orjson refuses (an integer beyond 64 bits, which
    the router then turns into a dead letter naming the field)."""
    try:
        return orjson.dumps(event)
    except orjson.JSONEncodeError:
        return _stdlib_dumps(event)


def to_records(
    events: list[dict[str, Any]], max_bytes: int, dumps: Callable[[dict[str, Any]], bytes] = fast_dumps
) -> list[tuple[bytes, bytes]]:
    """A request's events as Kafka (key, value) records, every event checked against ``max_bytes``
    before any is produced: a request is sent whole or not at all. One record per request (the
    router pays Faust's per-message cost once per request, not per event): a JSON array of the
    events, or the event itself when there is one, split into as few records as fit ``max_bytes``
    each; a record's key is its first event's. Raises EventTooLarge naming the first event over the
    limit, RejectedEvent for one no serialiser can write."""
    values: list[bytes] = []
    keys: list[bytes] = []
    for index, event in enumerate(events):
        try:
            value = dumps(event)
        except (ValueError, TypeError, RecursionError) as exc:  # nesting deeper than a serialiser goes
            raise RejectedEvent(f"event {index} cannot be written as JSON: {str(exc)[:200]}") from None
        key = event_key(event["source"], event["event_id"])
        size = len(key) + len(value)
        if size > max_bytes:
            raise EventTooLarge(index, size, max_bytes)
        keys.append(key)
        values.append(value)
    if len(values) == 1:
        return [(keys[0], values[0])]
    records = []
    start, size = 0, 0
    for index, value in enumerate(values):
        # the record's key and brackets, and the value with its comma
        if index > start and len(keys[start]) + 2 + size + len(value) + 1 > max_bytes:
            records.append(_record(keys[start], values[start:index]))
            start, size = index, 0
        size += len(value) + (1 if index > start else 0)
    records.append(_record(keys[start], values[start:]))
    return records


def _record(key: bytes, values: list[bytes]) -> tuple[bytes, bytes]:
    return key, values[0] if len(values) == 1 else b"[" + b",".join(values) + b"]"


# Every digit made a "0": a run of 20 of them is a run of 20 digits. 15x cheaper than the regex
# [0-9]{20}, which cost twice orjson's whole parse of a batch (220 us for 100 events).
_DIGITS_TO_ZERO = bytes.maketrans(b"0123456789", b"0" * 10)
_TWENTY_ZEROS = b"0" * 20


def _has_long_digit_run(data: bytes) -> bool:
    """Whether ``data`` holds 20 digits in a row (a number that may be beyond 64 bits)."""
    return _TWENTY_ZEROS in data.translate(_DIGITS_TO_ZERO)


def parse_body(data: bytes) -> tuple[Any, Callable[[dict[str, Any]], bytes]]:
    """A request body as JSON, and the serialiser its events need. orjson first; what it refuses
    (NaN, numbers beyond a double, nesting past 1024) gets the standard library's reading, so
    such input stays the dead letter it was rather than a new 400, and is written back as that
    library reads it. Raises ValueError (with the reason) for a body that is not JSON, or that
    escapes an unpaired surrogate."""
    fast_error: Exception | None = None
    if not _has_long_digit_run(data):  # orjson reads an integer beyond 64 bits as a double
        try:
            return orjson.loads(data), fast_dumps
        except orjson.JSONDecodeError as exc:
            fast_error = exc
    try:
        body = json.loads(data)
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        raise ValueError(f"body is not valid JSON: {fast_error or exc}") from None
    try:
        _stdlib_dumps(body)
    except UnicodeEncodeError:
        raise ValueError("body is not valid Unicode: it escapes an unpaired surrogate (\\ud800-\\udfff)") from None
    except (ValueError, RecursionError) as exc:
        raise ValueError(f"body is not valid JSON: {exc}") from None
    return body, _stdlib_dumps
