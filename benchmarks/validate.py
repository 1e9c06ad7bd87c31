"""Per-event cost of validation and of the router's whole decision, on this machine.

Run: .venv/bin/python benchmarks/validate.py
"""

from __future__ import annotations

import json
import platform
import timeit

from faust_app.routing import Source, route
from questlog.catalog import load_catalog, validate

CATALOG = load_catalog()
VALID = {
    "event_id": "0b7e3c1e-7d44-4c1e-9a57-0f4b2d1f9a11",
    "event_type": "purchase_sword",
    "received_at": "2026-11-29T10:00:00.123+00:00",
    "client_ts": "2026-11-29T09:59:58+00:00",
    "user_id": "user1",
    "host": "user1.comcast.com",
    "user_agent": "ApacheBench/2.3",
    "accept": "*/*",
    "sword_type": "katana",
    "rarity": "rare",
    "price": 12.5,
    "currency": "gold",
    "quantity": 1,
}
INVALID = {**VALID, "price": "a lot", "colour": "red"}
SRC = Source("events", 0, 0)


def per_event_us(stmt, n: int) -> float:
    best = min(timeit.repeat(stmt, number=n, repeat=5))
    return best / n * 1e6


def main() -> None:
    n = 50_000
    raw_valid, raw_invalid = json.dumps(VALID).encode(), json.dumps(INVALID).encode()
    print(f"python {platform.python_version()} on {platform.machine()}, best of 5 x {n} events")
    print(f"validate, valid event ({len(VALID)} fields):   {per_event_us(lambda: validate(VALID, CATALOG), n):6.2f} us")
    print(f"validate, invalid event (2 problems):   {per_event_us(lambda: validate(INVALID, CATALOG), n):6.2f} us")
    print(
        f"route (parse + validate + serialize), valid:   "
        f"{per_event_us(lambda: route(raw_valid, SRC, CATALOG, 'events', 'events.dlq'), n):6.2f} us"
    )
    print(
        f"route (parse + validate + dead letter), invalid: "
        f"{per_event_us(lambda: route(raw_invalid, SRC, CATALOG, 'events', 'events.dlq'), n):6.2f} us"
    )


if __name__ == "__main__":
    main()
