"""Small clients of the real services for integration and end-to-end tests."""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import requests
from confluent_kafka import Consumer, Producer

from questlog.settings import Settings
from questlog.sql import execute


def wait_for(probe: Callable[[], Any], timeout_s: float = 90.0, interval_s: float = 1.0, what: str = ""):
    """Call ``probe`` until it returns something truthy; fail with its last value after the timeout."""
    deadline = time.monotonic() + timeout_s
    last = None
    while time.monotonic() < deadline:
        last = probe()
        if last:
            return last
        time.sleep(interval_s)
    raise AssertionError(f"timed out after {timeout_s:.0f}s waiting for {what or probe}; last value: {last!r}")


def produce(settings: Settings, topic: str, values: list[bytes], key: bytes | None = None) -> None:
    producer = Producer({**settings.kafka_client(), "enable.idempotence": True})
    for value in values:
        producer.produce(topic, value, key=key)
    assert producer.flush(30) == 0, "Kafka did not take the test records"


def json_records(settings: Settings, topic: str, timeout_s: float) -> Iterator[tuple[Any, dict]]:
    """(message, record) for each JSON object in ``topic`` from its start, until ``timeout_s``
    (or until the caller stops iterating), and for each object of a record that is a JSON array
    (the collector writes a request's events as one; such an object gets ``_index``); other
    records are skipped."""
    consumer = Consumer(
        {
            **settings.kafka_client(),
            "group.id": f"test-{uuid.uuid4()}",
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    consumer.subscribe([topic])
    deadline = time.monotonic() + timeout_s
    try:
        while time.monotonic() < deadline:
            msg = consumer.poll(1.0)
            if msg is None or msg.error():
                continue
            try:
                record = json.loads(msg.value())
            except (ValueError, TypeError):  # not JSON, or no value at all
                continue
            if isinstance(record, dict):
                yield msg, record
            elif isinstance(record, list):
                for index, item in enumerate(record):
                    if isinstance(item, dict):
                        yield msg, {**item, "_index": index}
    finally:
        consumer.close()


def read_topic(
    settings: Settings, topic: str, match: Callable[[dict], bool], count: int, timeout_s: float = 60.0
) -> list[dict]:
    """The first ``count`` JSON records of ``topic`` (from its start) for which ``match`` is true;
    each gets ``_partition`` and ``_offset``."""
    found: list[dict] = []
    for msg, record in json_records(settings, topic, timeout_s) if count else ():
        if match(record):
            record["_partition"], record["_offset"], record["_key"] = msg.partition(), msg.offset(), msg.key()
            found.append(record)
            if len(found) == count:
                break
    assert len(found) == count, f"found {len(found)} of {count} matching records in {topic}: {found}"
    return found


def query(settings: Settings, sql: str) -> list[list]:
    return execute(settings, sql)[1]


def settle(settings: Settings, timeout_s: float = 90.0) -> None:
    """Wait until everything sent before now has landed: a marker sent through the whole pipeline
    lands after them (the router routes the raw topic in order, the sink plans each batch over
    every topic's latest offsets)."""
    marker = f"settle-{uuid.uuid4()}"
    response = requests.post(
        f"{settings.collector_url}/events", json={"event_type": "default", "event_id": marker}, timeout=10
    )
    assert response.status_code == 202, response.text
    wait_for(
        lambda: query(settings, f"SELECT count(*) FROM default_hits WHERE event_id = '{marker}'")[0][0],
        timeout_s,
        what="the settle marker",
    )


def count_when(settings: Settings, sql: str, expected: int, timeout_s: float = 90.0) -> int:
    """Poll a count(*) query until it reaches ``expected``, let the pipeline settle, and return the
    count then: a duplicate landing after the originals is counted too."""
    wait_for(lambda: query(settings, sql)[0][0] >= expected, timeout_s, what=f"{expected} rows from {sql}")
    settle(settings, timeout_s)
    return query(settings, sql)[0][0]


def webhdfs_list(settings: Settings, path: str) -> list[dict]:
    response = requests.get(f"{settings.webhdfs_url}/webhdfs/v1{path}", params={"op": "LISTSTATUS"}, timeout=10)
    response.raise_for_status()
    return response.json()["FileStatuses"]["FileStatus"]


def topic_ids_until(settings: Settings, topic: str, marker: str, timeout_s: float = 60.0) -> list[str]:
    """The event_ids of ``topic`` (from its start) up to and including the record whose event_id
    is ``marker``: what was written before it, in order (a single-partition topic)."""
    ids: list[str] = []
    for _, record in json_records(settings, topic, timeout_s):
        if isinstance(record.get("event_id"), str):
            ids.append(record["event_id"])
            if record["event_id"] == marker:
                return ids
    raise AssertionError(f"the marker {marker} did not arrive in {topic} within {timeout_s:.0f}s")
