"""Collector -> Kafka, against the real broker."""

import time
import uuid

import pytest
import requests

from tests.helpers import read_topic, topic_ids_until

pytestmark = pytest.mark.integration


def test_a_posted_event_arrives_on_the_raw_topic_with_its_envelope(live_settings):
    event_id = f"it-{uuid.uuid4()}"
    response = requests.post(
        f"{live_settings.collector_url}/events",
        timeout=10,
        json={"event_type": "purchase_sword", "event_id": event_id, "price": 9.5},
        headers={"Host": "it.example", "User-Agent": "pytest", "Event-Type": "default"},
    )
    assert response.status_code == 202, response.text

    [record] = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("event_id") == event_id, 1)
    assert record["event_type"] == "purchase_sword"
    assert record["price"] == 9.5
    assert (record["host"], record["user_agent"]) == ("it.example", "pytest")
    assert record["received_at"].endswith("+00:00")
    assert record["source"] == "default"  # write keys are off in the test pipeline
    assert record["_key"] == f"default/{event_id}".encode()


def test_a_seed_route_is_on_kafka_when_the_response_arrives(live_settings):
    host = f"{uuid.uuid4()}.comcast.com"
    response = requests.get(
        f"{live_settings.collector_url}/join_a_guild", params={"guild_id": "g7"}, headers={"Host": host}, timeout=10
    )
    assert (response.status_code, response.text) == (200, "Joined a Guild!\n")
    [record] = read_topic(live_settings, live_settings.raw_topic, lambda r: r.get("host") == host, 1, timeout_s=20)
    assert (record["event_type"], record["guild_id"]) == ("join_guild", "g7")


def test_healthz_sees_kafka(live_settings):
    assert requests.get(f"{live_settings.collector_url}/healthz", timeout=10).json() == {"status": "ok"}


def test_metrics_count_what_the_running_collector_accepted(live_settings):
    def accepted() -> float:
        text = requests.get(f"{live_settings.collector_url}/metrics", timeout=10).text
        line = next(
            (m for m in text.splitlines() if m.startswith('questlog_events_accepted_total{event_type="leave_guild"}')),
            None,
        )
        return float(line.rsplit(" ", 1)[1]) if line else 0.0

    before = accepted()
    for _ in range(6):
        assert (
            requests.post(
                f"{live_settings.collector_url}/events", timeout=10, json={"event_type": "leave_guild", "guild_id": "g"}
            ).status_code
            == 202
        )
    assert accepted() == before + 6


def test_an_oversized_event_in_the_middle_of_a_batch_lands_nothing(live_settings):
    run = uuid.uuid4().hex
    batch = [
        {
            "event_type": "default",
            "event_id": f"aon-{run}-{i}",
            "pad": "x" * (100 if i != 2 else live_settings.max_body_bytes - 1200),
        }
        for i in range(5)
    ]
    response = requests.post(
        f"{live_settings.collector_url}/events", json=batch, timeout=30, headers={"User-Agent": "u" * 1000}
    )  # the envelope pushes event 2 over the limit
    assert response.status_code == 413, response.text
    assert response.json()["rejected"][0]["index"] == 2

    marker = f"aon-{run}-marker"
    assert (
        requests.post(
            f"{live_settings.collector_url}/events", timeout=10, json={"event_type": "default", "event_id": marker}
        ).status_code
        == 202
    )
    seen = topic_ids_until(live_settings, live_settings.raw_topic, marker)
    assert [i for i in seen if i.startswith(f"aon-{run}-")] == [marker]  # none of the batch before it


@pytest.mark.parametrize("event_id", ["", "has space", "x" * 129, 12, "a/b", "ünï"])
def test_an_invalid_event_id_is_a_400_from_the_running_collector(live_settings, event_id):
    response = requests.post(
        f"{live_settings.collector_url}/events", timeout=10, json={"event_type": "default", "event_id": event_id}
    )
    assert response.status_code == 400, response.text
    assert "event_id must be 1 to 128 characters" in response.json()["error"]


@pytest.mark.parametrize(
    "headers, params",
    [
        ({"User-Agent": "u" * 1_000_000}, {}),  # a megabyte header
        ({f"X-H{i}": "v" for i in range(2000)}, {}),  # many headers
        ({}, {f"f{i}": "1" for i in range(5000)}),  # many query parameters
    ],
)
def test_huge_requests_to_the_running_server_are_never_a_5xx(live_settings, headers, params):
    try:
        response = requests.get(
            f"{live_settings.collector_url}/purchase_a_sword", headers=headers, params=params, timeout=30
        )
    except requests.ConnectionError:  # the server may close the connection on an oversized head: no 5xx either
        return
    assert response.status_code < 500, response.text[:300]


def test_healthz_answers_fast(live_settings):
    started = time.monotonic()
    for _ in range(20):
        assert requests.get(f"{live_settings.collector_url}/healthz", timeout=5).status_code == 200
    assert (time.monotonic() - started) / 20 < 0.05
