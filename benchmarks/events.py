"""Bench traffic: event bodies as a client sends them, and typed records as the router writes them
(`faust_app.routing`). Raw records as the collector writes them are made by the router case with
`producer.envelope.to_records`."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

from faust_app.routing import Source, route
from producer.envelope import build_envelope, utc_now
from questlog.catalog import Catalog

# One body per type with every field the catalog gives it, so rows are as wide as real ones.
BODIES: dict[str, dict[str, Any]] = {
    "purchase_sword": {"sword_type": "katana", "rarity": "rare", "price": 12.5, "currency": "gold", "quantity": 1},
    "join_guild": {"guild_id": "g-42", "guild_name": "Night Owls", "role": "member"},
    "leave_guild": {"guild_id": "g-42", "guild_name": "Night Owls", "reason": "quit", "days_in_guild": 12},
    "level_up": {"level": 17, "character_class": "mage", "xp_total": 123456, "play_seconds": 901.5},
}
CONTEXT = {"host": "user1.comcast.com", "user_agent": "questlog-bench/1", "accept": "*/*"}


def load_types(catalog: Catalog) -> list[str]:
    """The types the bench sends: those above that the catalog knows."""
    types = [t for t in BODIES if t in catalog]
    if not types:
        raise RuntimeError("the catalog knows none of the bench's event types")
    return types


def body(event_type: str, i: int, invalid: bool = False) -> dict[str, Any]:
    event = {
        "event_type": event_type,
        **BODIES[event_type],
        "client_ts": "2026-11-29T09:59:58+00:00",
        "user_id": f"player{i % 5000}",
    }
    if invalid:  # a field problem the collector lets through and the router turns into a dead letter
        event["level" if event_type == "level_up" else "user_id"] = {"not": "a scalar"}
    return event


def bodies(types: list[str], n: int, start: int = 0) -> list[dict[str, Any]]:
    return [body(types[(start + i) % len(types)], start + i) for i in range(n)]


def typed_records(
    catalog: Catalog, raw_topic: str, per_type: int, types: list[str]
) -> Iterator[tuple[str, bytes, bytes]]:
    """``per_type`` records for each of ``types``, as the router writes them to ``<raw_topic>.<type>``."""
    now = utc_now()
    for i in range(per_type):
        for t in types:
            event = build_envelope(body(t, i), catalog, CONTEXT, now)
            routed = route(json.dumps(event).encode(), Source(raw_topic, 0, i), catalog, raw_topic, raw_topic + ".dlq")
            if routed.dead:
                raise RuntimeError(f"bench event of type {t} is not valid: {routed.reason}")
            assert routed.key is not None  # a typed record is always keyed
            yield routed.topic, routed.key, routed.value


def probe_id(run: str, label: str, i: int) -> str:
    return f"probe-{run}-{label}-{i:05d}"
