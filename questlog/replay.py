"""Re-sending dead letters once the catalog accepts them: `questlog replay`.

A dead letter's raw payload is sent again, unchanged, to the raw topic (same `event_id`, same
`received_at`, so the same `dt`). Replaying is idempotent: events already in their table are not
sent, and the sink drops any repeated `event_id` besides.
"""

from __future__ import annotations

import json
from collections import Counter
from dataclasses import dataclass, field

from questlog.catalog import DEAD_LETTER_TABLE, Catalog, validate
from questlog.settings import Settings


@dataclass
class ReplayPlan:
    send: dict[str, tuple[str, bytes]] = field(default_factory=dict)  # event_id -> (event_type, raw)
    still_invalid: Counter = field(default_factory=Counter)  # reason -> count
    not_replayable: int = 0  # not JSON, or without an event_id: no catalog change can fix them
    already_landed: int = 0


def plan_replay(raws: list[str], catalog: Catalog) -> ReplayPlan:
    """Which dead letters (their raw payloads) the catalog now accepts, by event_id."""
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
            plan.send[event["event_id"]] = (event["event_type"], raw.encode())
    return plan


def _landed(cursor, catalog: Catalog, plan: ReplayPlan) -> set[str]:
    landed: set[str] = set()
    by_type: dict[str, list[str]] = {}
    for event_id, (event_type, _) in plan.send.items():
        by_type.setdefault(event_type, []).append(event_id)
    for event_type, ids in by_type.items():
        table = catalog.types[event_type].table
        for i in range(0, len(ids), 500):
            chunk = ids[i:i + 500]
            cursor.execute(f'SELECT event_id FROM "{table}" WHERE event_id IN ({", ".join("?" * len(chunk))})',
                           chunk)
            landed.update(row[0] for row in cursor.fetchall())
    return landed


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
    for event_id in landed:
        del plan.send[event_id]
    if dry_run or not plan.send:
        return plan
    producer = Producer({"bootstrap.servers": settings.kafka_bootstrap, "enable.idempotence": True, "acks": "all"})
    for event_id, (_, raw) in plan.send.items():
        producer.produce(settings.raw_topic, raw, key=event_id.encode(), headers={"questlog-replay": b"1"})
    remaining = producer.flush(60)
    if remaining:
        raise RuntimeError(f"Kafka did not confirm {remaining} replayed events; run the replay again")
    return plan
