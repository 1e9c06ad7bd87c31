"""The collector's HTTP behaviour, with Kafka swapped for a recording writer."""

import json

import pytest

from producer import create_app
from producer.envelope import RejectedEvent, build_envelope, user_from_host
from producer.kafka import DeliveryError


class RecordingWriter:
    def __init__(self, fail: bool = False):
        self.sent: list[dict] = []
        self.fail = fail

    def send(self, events):
        if self.fail:
            raise DeliveryError("broker down")
        self.sent.extend(events)

    def ping(self):
        return not self.fail


@pytest.fixture
def writer():
    return RecordingWriter()


@pytest.fixture
def app(settings, writer):
    return create_app({"SETTINGS": settings.replace(max_body_bytes=2048, max_batch_events=5),
                       "EVENT_WRITER": writer})


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.mark.parametrize("path, event_type, text", [
    ("/", "default", "This is the default response!\n"),
    ("/purchase_a_sword", "purchase_sword", "Sword Purchased!\n"),
    ("/join_guild", "join_guild", "Joined a Guild!\n"),
    ("/join_a_guild", "join_guild", "Joined a Guild!\n"),
])
def test_seed_routes_answer_as_the_seed_did_and_record_the_event(client, writer, path, event_type, text):
    response = client.get(path, headers={"Host": "user1.comcast.com", "User-Agent": "ApacheBench/2.3"})
    assert response.status_code == 200
    assert response.get_data(as_text=True) == text
    [event] = writer.sent
    assert event["event_type"] == event_type
    assert event["host"] == "user1.comcast.com"
    assert event["user_agent"] == "ApacheBench/2.3"
    assert len(event["event_id"]) == 36 and event["received_at"].endswith("+00:00")


def test_query_parameters_become_typed_fields(client, writer):
    client.get("/purchase_a_sword?sword_type=katana&price=12.5&quantity=2")
    [event] = writer.sent
    assert (event["sword_type"], event["price"], event["quantity"]) == ("katana", 12.5, 2)


def test_headers_never_set_event_fields(client, writer):
    client.get("/purchase_a_sword", headers={"Event-Type": "join_guild", "event_type": "join_guild",
                                             "Received-At": "1999-01-01", "X-Price": "0"})
    [event] = writer.sent
    assert event["event_type"] == "purchase_sword"
    assert set(event) == {"event_id", "event_type", "received_at", "host", "user_agent", "accept"}
    assert event["host"] == "localhost"  # no user_id from a single-label host


def test_post_one_event_keeps_the_clients_event_id_and_replaces_server_fields(client, writer):
    body = {"event_type": "purchase_sword", "event_id": "client-1", "price": 3,
            "received_at": "1999-01-01T00:00:00+00:00", "host": "spoofed"}
    response = client.post("/events", json=body, headers={"Host": "real.host"})
    assert response.status_code == 202
    assert response.get_json() == {"accepted": 1, "event_ids": ["client-1"]}
    [event] = writer.sent
    assert event["event_id"] == "client-1"
    assert event["host"] == "real.host"
    assert event["received_at"].startswith("20") and not event["received_at"].startswith("1999")


def test_post_an_array(client, writer):
    response = client.post("/events", json=[{"event_type": "join_guild", "guild_id": "g1"},
                                            {"event_type": "default"}])
    assert response.status_code == 202
    assert [e["event_type"] for e in writer.sent] == ["join_guild", "default"]


def test_field_errors_are_accepted_for_the_router_to_dead_letter(client, writer):
    response = client.post("/events", json={"event_type": "purchase_sword", "price": "abc"})
    assert response.status_code == 202
    assert writer.sent[0]["price"] == "abc"


@pytest.mark.parametrize("data, status, reason", [
    (b"{not json", 400, "body is not valid JSON"),
    (b"", 400, "body is not valid JSON"),
    (b"[]", 400, "empty array"),
    (b'"a string"', 400, "an event must be a JSON object, got str"),
    (b'{"event_type": "fly_dragon"}', 400, "unknown event_type 'fly_dragon'"),
    (b'{"price": 1}', 400, "unknown event_type None"),
    (json.dumps([{"event_type": "default"}] * 6).encode(), 413, "6 events in one request; at most 5"),
    (b'{"event_type": "default", "pad": "' + b"x" * 3000 + b'"}', 413, "body larger than 2048 bytes"),
])
def test_bad_input_gets_a_4xx_with_a_reason_and_nothing_is_sent(client, writer, data, status, reason):
    response = client.post("/events", data=data, content_type="application/json")
    assert response.status_code == status
    assert reason in response.get_json()["error"]
    assert writer.sent == []


def test_one_bad_event_in_an_array_rejects_the_request_with_its_index(client, writer):
    response = client.post("/events", json=[{"event_type": "default"}, {"event_type": "nope"}])
    assert response.status_code == 400
    assert response.get_json()["rejected"] == [
        {"index": 1, "error": "unknown event_type 'nope'; known types: default, join_guild, leave_guild, "
                              "level_up, purchase_sword"}]
    assert writer.sent == []


def test_kafka_failure_is_a_503_so_the_client_retries(settings):
    app = create_app({"SETTINGS": settings, "EVENT_WRITER": RecordingWriter(fail=True)})
    client = app.test_client()
    assert client.get("/purchase_a_sword").status_code == 503
    response = client.post("/events", json={"event_type": "default"})
    assert response.status_code == 503
    assert "retry" in response.get_json()["error"]
    assert client.get("/healthz").status_code == 503


def test_unknown_route_is_a_404_with_a_reason(client):
    response = client.get("/buy_a_dragon")
    assert response.status_code == 404
    assert response.get_json()["error"]


def test_build_envelope_rejects_non_objects(catalog):
    with pytest.raises(RejectedEvent):
        build_envelope(["x"], catalog, {}, "2026-01-01T00:00:00+00:00")


@pytest.mark.parametrize("host, user", [
    ("user1.comcast.com", "user1"), ("user1.comcast.com:5000", "user1"), ("127.0.0.1:5000", None),
    ("localhost", None), ("comcast.com", None), ("[::1]:5000", None), ("", None), (None, None),
])
def test_user_id_from_the_host_header_as_in_the_seed(host, user):
    assert user_from_host(host) == user


def test_identity_and_time_fields(client, writer):
    client.post("/events", headers={"Host": "user7.comcast.com"}, json=[
        {"event_type": "default"},
        {"event_type": "default", "user_id": "player-42", "client_ts": "2026-11-29T09:00:00+01:00",
         "schema_version": 99},
    ])
    first, second = writer.sent
    assert first["user_id"] == "user7"  # from the Host header
    assert second["user_id"] == "player-42"  # the event's own wins
    assert second["client_ts"] == "2026-11-29T09:00:00+01:00"  # the client's clock, kept as sent
    assert "schema_version" not in second  # only the router sets it
    assert first["received_at"] == second["received_at"] != second["client_ts"]


def _metric(client, line_start):
    for line in client.get("/metrics").get_data(as_text=True).splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_metrics_count_accepted_events_by_type_and_rejections_by_status(client):
    accepted = 'questlog_events_accepted_total{event_type="level_up"}'
    rejected = 'questlog_requests_rejected_total{status="400"}'
    before = _metric(client, accepted), _metric(client, rejected)
    client.post("/events", json=[{"event_type": "level_up", "level": 1}] * 3)
    client.post("/events", data=b"{", content_type="application/json")
    assert (_metric(client, accepted), _metric(client, rejected)) == (before[0] + 3, before[1] + 1)


@pytest.mark.parametrize("data, reason", [
    (b'{"event_type": ["x"]}', "unknown event_type ['x']"),
    (b'{"event_type": {}}', "unknown event_type {}"),
    (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
    (b'{"event_type": "default", "event_id": "a\\ud800"}', "body is not valid Unicode"),
])
def test_odd_input_is_a_400_not_a_crash(settings, writer, data, reason):
    client = create_app({"SETTINGS": settings, "EVENT_WRITER": writer}).test_client()
    response = client.post("/events", data=data, content_type="application/json")
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert writer.sent == []


def test_a_503_names_the_event_ids_to_retry_with(settings):
    client = create_app({"SETTINGS": settings, "EVENT_WRITER": RecordingWriter(fail=True)}).test_client()
    response = client.post("/events", json=[{"event_type": "default", "event_id": "mine"}, {"event_type": "default"}])
    assert response.status_code == 503
    ids = response.get_json()["event_ids"]
    assert ids[0] == "mine" and len(ids[1]) == 36
