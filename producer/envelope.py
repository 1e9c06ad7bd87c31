"""Building the event envelope: pure functions, no Flask request or Kafka in sight."""

from __future__ import annotations

import ipaddress
import uuid
from datetime import datetime, timezone
from typing import Any, Mapping

from questlog.catalog import ENVELOPE, Catalog

# The only request headers that reach an event, and the field each one fills. A header can never
# set any other field: the seed's `event.update(request.headers)` let a client overwrite
# `event_type` by sending a header, which we never do.
HEADER_FIELDS: Mapping[str, str] = {"Host": "host", "User-Agent": "user_agent", "Accept": "accept"}

# Fields only Questlog sets (the collector, or the router for schema_version); a client value for
# them is replaced, not trusted.
SERVER_FIELDS = frozenset({"received_at", "schema_version", *HEADER_FIELDS.values()})


class RejectedEvent(ValueError):
    """The input cannot become an event at all; the message is the reason the client sees."""


def utc_now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def client_context(headers: Mapping[str, str]) -> dict[str, str | None]:
    return {field: headers.get(header) for header, field in HEADER_FIELDS.items()}


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


def build_envelope(
    body: Any,
    catalog: Catalog,
    context: Mapping[str, str | None],
    received_at: str,
    event_type: str | None = None,
) -> dict[str, Any]:
    """Wrap one client event in the envelope.

    ``body`` is the client's JSON object (or the query parameters of a GET route); ``event_type``
    is set by a route and wins over the body. Raises RejectedEvent if ``body`` cannot be an event
    (not an object, unknown type). Field-level problems are left for the router, which turns them
    into dead letters that can be replayed once the catalog is fixed.
    """
    if not isinstance(body, dict):
        raise RejectedEvent(f"an event must be a JSON object, got {type(body).__name__}")
    name = event_type if event_type is not None else body.get("event_type")
    if not isinstance(name, str) or name not in catalog:
        raise RejectedEvent(f"unknown event_type {name!r}; known types: {', '.join(catalog.names)}")
    event = {k: v for k, v in body.items() if k not in SERVER_FIELDS}
    event_id = event.get("event_id")
    if event_id is None or event_id == "":
        event_id = str(uuid.uuid4())
    event.update(context)
    event.update(event_id=event_id, event_type=name, received_at=received_at)
    if event.get("user_id") is None:
        user = user_from_host(context.get("host"))
        if user is not None:
            event["user_id"] = user
    # Envelope first, then the type's own fields, in the order the client sent them.
    ordered = {f.name: event[f.name] for f in ENVELOPE if f.name in event}
    ordered.update((k, v) for k, v in event.items() if k not in ordered)
    return ordered
