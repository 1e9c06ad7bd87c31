"""Collector -> Kafka, against the real broker."""

import uuid

import pytest
import requests

from tests.helpers import read_topic

pytestmark = pytest.mark.integration


def test_a_posted_event_arrives_on_the_raw_topic_with_its_envelope(live_settings):
    event_id = f"it-{uuid.uuid4()}"
    response = requests.post(f"{live_settings.collector_url}/events", timeout=10,
                             json={"event_type": "purchase_sword", "event_id": event_id, "price": 9.5},
                             headers={"Host": "it.example", "User-Agent": "pytest", "Event-Type": "default"})
    assert response.status_code == 202, response.text

    [record] = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("event_id") == event_id, 1)
    assert record["event_type"] == "purchase_sword"
    assert record["price"] == 9.5
    assert (record["host"], record["user_agent"]) == ("it.example", "pytest")
    assert record["received_at"].endswith("+00:00")
    assert record["_key"] == event_id.encode()


def test_a_seed_route_is_on_kafka_when_the_response_arrives(live_settings):
    host = f"{uuid.uuid4()}.comcast.com"
    response = requests.get(f"{live_settings.collector_url}/join_a_guild", params={"guild_id": "g7"},
                            headers={"Host": host}, timeout=10)
    assert (response.status_code, response.text) == (200, "Joined a Guild!\n")
    [record] = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("host") == host, 1,
                          timeout_s=20)
    assert (record["event_type"], record["guild_id"]) == ("join_guild", "g7")


def test_healthz_sees_kafka(live_settings):
    assert requests.get(f"{live_settings.collector_url}/healthz", timeout=10).json() == {"status": "ok"}


def test_metrics_count_what_the_running_collector_accepted(live_settings):
    def accepted() -> float:
        text = requests.get(f"{live_settings.collector_url}/metrics", timeout=10).text
        line = next((l for l in text.splitlines() if l.startswith('questlog_events_accepted_total{event_type="leave_guild"}')),
                    None)
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = accepted()
    for _ in range(6):
        assert requests.post(f"{live_settings.collector_url}/events", timeout=10,
                             json={"event_type": "leave_guild", "guild_id": "g"}).status_code == 202
    assert accepted() == before + 6
