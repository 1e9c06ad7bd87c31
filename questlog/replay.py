"""Re-sending dead letters once the catalog accepts them: `questlog replay`.

A dead letter's raw payload is sent again, unchanged, to the raw topic (same `source` and
`event_id`, same `received_at`, so the same `dt`). Replaying is idempotent: events already in
their table are not sent, and the sink drops any repeated (`source`, `event_id`) besides. Two
sources may use the same `event_id`: each is an event of its own, here as in the sink.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from questlog.catalog import DEAD_LETTER_TABLE, Catalog, event_key, validate
from questlog.settings import Settings

# An event's identity: (source, event_id); source is None for events from before sources existed.
Identity = tuple[str | None, str]


@dataclass
class ReplayPlan:
    send: dict[Identity, tuple[str, bytes]] = field(default_factory=dict)  # (source, event_id) -> (event_type, raw)
    still_invalid: Counter = field(default_factory=Counter)  # reason -> count
    not_replayable: int = 0  # not JSON, or without an event_id: no catalog change can fix them
    already_landed: int = 0


def plan_replay(raws: list[str], catalog: Catalog) -> ReplayPlan:
    """Which dead letters (their raw payloads) the catalog now accepts, by (source, event_id)."""
    plan = ReplayPlan()
    for raw in raws:
        try:
            event = json.loads(raw)
        except ValueError:
            plan.not_replayable += 1
            continue
        if not isinstance(event, dict) or not isinstance(event.get("event_id"), str):
            plan.not_replayable += 1
            continue
        errors = validate(event, catalog)
        if errors:
            plan.still_invalid["; ".join(errors)] += 1
        else:
            source = event.get("source") if isinstance(event.get("source"), str) else None
            plan.send[(source, event["event_id"])] = (event["event_type"], raw.encode())
    return plan


def _landed(cursor, catalog: Catalog, plan: ReplayPlan) -> set[Identity]:
    """The planned events already in their table, matched on (source, event_id)."""
    landed: set[Identity] = set()
    by_type: dict[str, list[str]] = {}
    for identity, (event_type, _) in plan.send.items():
        by_type.setdefault(event_type, []).append(identity[1])
    for event_type, ids in by_type.items():
        table = catalog.types[event_type].table
        ids = sorted(set(ids))
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            cursor.execute(f'SELECT source, event_id FROM "{table}" WHERE event_id IN ({", ".join("?" * len(chunk))})',
                           chunk)
            landed.update((row[0], row[1]) for row in cursor.fetchall())
    return landed & plan.send.keys()


def replay(settings: Settings, catalog: Catalog, event_type: str | None = None, dry_run: bool = False) -> ReplayPlan:
    from confluent_kafka import Producer

    from questlog.sql import connect

    conn = connect(settings)
    try:
        cur = conn.cursor()
        sql = f'SELECT raw FROM "{DEAD_LETTER_TABLE}"'
        params = []
        if event_type:
            sql += " WHERE event_type = ?"
            params.append(event_type)
        cur.execute(sql, params)
        plan = plan_replay([row[0] for row in cur.fetchall()], catalog)
        landed = _landed(cur, catalog, plan)
    finally:
        conn.close()
    plan.already_landed = len(landed)
    for identity in landed:
        del plan.send[identity]
    if dry_run or not plan.send:
        return plan
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for (source, event_id), (_, raw) in plan.send.items():
        producer.produce(settings.raw_topic, raw, key=event_key(source, event_id), headers={"questlog-replay": b"1"})
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"Kafka did not confirm {remaining} replayed events; run the replay again")
    return plan
