"""Validation of events against the catalog: one compiled validator per event type, and reasons
that stay short whatever a client sends."""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any

from questlog.catalog.model import EVENT_ID_RULE, Catalog, EventType, Field, valid_event_id


def _describe(value: Any) -> str:
    kind = {
        str: "string",
        bool: "boolean",
        int: "integer",
        float: "number",
        list: "array",
        dict: "object",
        type(None): "null",
    }.get(type(value), type(value).__name__)
    if isinstance(value, (str, list, dict)) and len(value) > 40:  # no repr of a megabyte value
        value = value[:40] if isinstance(value, (str, list)) else dict(list(value.items())[:4])
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def short_name(name: str, limit: int = 64) -> str:
    """A field name as it appears in a reason: quoted, and cut if it is long, so that a reason
    stays short whatever a client sends."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"


# At most this many names of unknown fields are listed in one reason (the count says the rest).
MAX_NAMED_UNKNOWN = 10


def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 timestamp with a time zone, or None."""
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo is not None else None


_CHECKS: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "long": lambda v: type(v) is int and -(2**63) <= v < 2**63,
    "double": lambda v: (type(v) is float and math.isfinite(v)) or type(v) is int,
    "boolean": lambda v: type(v) is bool,
    "timestamp": lambda v: type(v) is str and parse_timestamp(v) is not None,
}


# Values of these exact Python types need no further check for the field type (the hot path).
_EXACT: Mapping[str, frozenset[type]] = {"string": frozenset({str}), "boolean": frozenset({bool})}


def _mismatch(f: Field, value: Any) -> str:
    expected = "ISO-8601 timestamp with time zone" if f.type == "timestamp" else f.type
    return f"field {f.name!r}: expected {expected}, got {_describe(value)}"


def compile_validator(et: EventType) -> Callable[[dict], list[str]]:
    """A function checking one event (a dict) of type ``et``: every problem, or an empty list.

    The per-field checks, the required set and the allowed names are computed here once, so
    validating an event is a few dict look-ups and type checks per field."""
    checks = {f.name: (f, _CHECKS[f.type], _EXACT.get(f.type, frozenset())) for f in et.columns}
    required = tuple(f.name for f in et.columns if f.required)
    allowed = ", ".join(sorted(checks))

    def validate_event(event: dict) -> list[str]:
        errors = [f"field {name!r}: required, missing" for name in required if name not in event]
        unknown: list[str] = []
        for key, value in event.items():
            entry = checks.get(key)
            if entry is None:
                unknown.append(key)
            elif type(value) in entry[2]:
                pass
            elif value is None:
                if entry[0].required:
                    errors.append(f"field {key!r}: required, got null")
            elif not entry[1](value):
                errors.append(_mismatch(entry[0], value))
        if unknown:  # one reason for all of them: its size does not grow with what a client sends
            named = ", ".join(short_name(k) for k in unknown[:MAX_NAMED_UNKNOWN])
            if len(unknown) == 1:
                errors.append(f"field {named}: not in the {et.name!r} schema (fields: {allowed})")
            else:
                more = f" and {len(unknown) - MAX_NAMED_UNKNOWN} more" if len(unknown) > MAX_NAMED_UNKNOWN else ""
                errors.append(f"{len(unknown)} fields not in the {et.name!r} schema: {named}{more} (fields: {allowed})")
        event_id = event.get("event_id")
        if type(event_id) is str and not valid_event_id(event_id):
            errors.append(f"field 'event_id': expected {EVENT_ID_RULE}, got {_describe(event_id)}")
        return errors

    return validate_event


def validate(event: Any, catalog: Catalog) -> list[str]:
    """Every problem with ``event`` against the catalog; an empty list means it is valid."""
    if not isinstance(event, dict):
        return [f"event must be a JSON object, got {_describe(event)}"]
    name = event.get("event_type")
    if not isinstance(name, str) or name not in catalog.types:
        shown = short_name(name) if isinstance(name, str) else "None" if name is None else _describe(name)
        return [f"unknown event_type {shown}; known types: {', '.join(catalog.names)}"]
    return catalog.validator(name)(event)
