"""The collector's bounds against the real stack: what it refuses records nothing, slow clients
do not starve it, and Kafka's topics are bounded in size."""

from __future__ import annotations

import json
import socket
import time
import uuid

import pytest
import requests
from confluent_kafka import Consumer, Producer, TopicPartition
from confluent_kafka.admin import ConfigResource

from questlog.kafka_admin import admin_client, ensure_topics
from tests.helpers import topic_ids_until

pytestmark = pytest.mark.integration


def test_refused_requests_record_nothing(live_settings):
    run = f"lim-{uuid.uuid4().hex}"
    url = live_settings.collector_url
    form = requests.post(
        f"{url}/events",
        data=json.dumps({"event_type": "default", "event_id": f"{run}-form"}),
        headers={"Content-Type": "text/plain"},  # what a cross-site form may send
        timeout=10,
    )
    assert form.status_code == 415, form.text
    head = requests.head(f"{url}/purchase_a_sword", params={"event_id": f"{run}-head"}, timeout=10)
    assert (head.status_code, head.headers["Allow"]) == (405, "GET")
    amplified = requests.post(
        f"{url}/events",
        json=[{"event_type": "default", "event_id": f"{run}-amp-{i}"} for i in range(1000)],
        headers={"User-Agent": "u" * 1000, "Accept": "a" * 1000},
        timeout=30,
    )
    assert amplified.status_code == 413 and "at most 10 times" in amplified.json()["error"], amplified.text
    long_header = requests.get(
        f"{url}/purchase_a_sword", params={"event_id": f"{run}-hdr"}, headers={"User-Agent": "u" * 1025}, timeout=10
    )
    assert long_header.status_code == 431
    ok = requests.get(f"{url}/purchase_a_sword", params={"event_id": f"{run}-ok"}, timeout=10)
    assert ok.status_code == 200
    # the raw topic up to the accepted event holds none of the refused ones sent before it
    written = topic_ids_until(live_settings, live_settings.raw_topic, f"{run}-ok")
    assert [i for i in written if i.startswith(run)] == [f"{run}-ok"]


def test_64_slow_clients_do_not_starve_healthz_or_events(live_settings):
    host, port = live_settings.collector_host, live_settings.collector_port
    slow: list[socket.socket] = []
    try:
        for _ in range(64):  # bodies that never finish: each holds a thread of a worker
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(
                b"POST /events HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 100000\r\n\r\n["
            )
            slow.append(s)
        for _ in range(64):  # headers that never finish
            s = socket.create_connection((host, port), timeout=5)
            s.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")
            slow.append(s)
        time.sleep(1.0)
        took = []
        for _ in range(10):
            started = time.monotonic()
            health = requests.get(f"{live_settings.collector_url}/healthz", timeout=10)
            took.append(time.monotonic() - started)
            assert health.status_code == 200
        event = requests.post(f"{live_settings.collector_url}/events", json={"event_type": "default"}, timeout=10)
        assert event.status_code == 202
        print(f"/healthz with 128 slow connections open: slowest of 10 {max(took) * 1000:.0f} ms")
        assert max(took) < 2.0, took
    finally:
        for s in slow:
            s.close()


def test_pipeline_topics_are_bounded_in_size(live_settings):
    admin = admin_client(live_settings.kafka_client())
    [future] = admin.describe_configs([ConfigResource(ConfigResource.Type.TOPIC, live_settings.raw_topic)]).values()
    config = future.result()
    assert config["retention.bytes"].value == str(live_settings.topic_retention_bytes)
    assert config["segment.bytes"].value == str(live_settings.topic_retention_bytes // 8)


def test_a_flood_past_a_topics_retention_bytes_is_cut_back(live_settings):
    topic = f"flood_{uuid.uuid4().hex[:8]}"
    bound = 2 * 2**20
    ensure_topics(
        live_settings.kafka_client(), [topic], 1, config={"retention.bytes": str(bound), "segment.bytes": str(2**20)}
    )
    producer = Producer({**live_settings.kafka_client(), "linger.ms": 20})
    value = b"x" * 10_000
    for _ in range(1000):  # 10 MB
        producer.produce(topic, value)
        producer.poll(0)
    assert producer.flush(30) == 0
    consumer = Consumer({**live_settings.kafka_client(), "group.id": f"t-{topic}"})
    deadline = time.monotonic() + 120
    try:
        while True:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)
            kept = (high - low) * len(value)
            if kept <= bound + 2**20 or time.monotonic() > deadline:
                break
            time.sleep(2)
    finally:
        consumer.close()
    print(f"flood of {high * len(value)} bytes into a topic of retention.bytes {bound}: {kept} bytes kept")
    assert high == 1000 and kept <= bound + 2**20, (low, high)
