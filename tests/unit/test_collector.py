"""The collector's HTTP behaviour, with Kafka swapped for a recording writer."""

import json
import uuid

import pytest

from producer import create_app
from producer.auth import KeyFileError, WriteKeys
from producer.envelope import RejectedEvent, build_envelope, new_event_ids, user_from_host
from producer.writer import DeliveryError
from questlog.catalog import ENVELOPE


class RecordingWriter:
    """Stands in for the Kafka writer: keeps what it was given (each record, and each event of the
    records decoded), or fails like Kafka."""

    def __init__(self, fail: bool = False):
        self.sent: list[dict] = []
        self.records: list[tuple[bytes, bytes]] = []
        self.keys: list[bytes] = []
        self.fail = fail
        self.available = True
        self.state = "down" if fail else "up"

    def send(self, records):
        if self.fail:
            raise DeliveryError("broker down")
        for key, value in records:
            self.records.append((key, value))
            self.keys.append(key)
            decoded = json.loads(value)
            self.sent.extend(decoded if isinstance(decoded, list) else [decoded])


def make_app(settings, writer, **config):
    return create_app({"SETTINGS": settings, **config}, writer_factory=lambda _: writer)


@pytest.fixture
def writer():
    return RecordingWriter()


@pytest.fixture
def app(settings, writer):
    return make_app(settings.replace(max_body_bytes=2048, max_batch_events=5), writer)


@pytest.fixture
def client(app):
    return app.test_client()


@pytest.mark.parametrize(
    "path, event_type, text",
    [
        ("/", "default", "This is the default response!\n"),
        ("/purchase_a_sword", "purchase_sword", "Sword Purchased!\n"),
        ("/join_guild", "join_guild", "Joined a Guild!\n"),
        ("/join_a_guild", "join_guild", "Joined a Guild!\n"),
    ],
)
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
    client.get(
        "/purchase_a_sword",
        headers={"Event-Type": "join_guild", "event_type": "join_guild", "Received-At": "1999-01-01", "X-Price": "0"},
    )
    [event] = writer.sent
    assert event["event_type"] == "purchase_sword"
    assert set(event) == {"event_id", "source", "event_type", "received_at", "host", "user_agent", "accept"}
    assert event["source"] == "default"
    assert event["host"] == "localhost"  # no user_id from a single-label host


def test_post_one_event_keeps_the_clients_event_id_and_replaces_server_fields(client, writer):
    body = {
        "event_type": "purchase_sword",
        "event_id": "client-1",
        "price": 3,
        "received_at": "1999-01-01T00:00:00+00:00",
        "host": "spoofed",
    }
    response = client.post("/events", json=body, headers={"Host": "real.host"})
    assert response.status_code == 202
    assert response.get_json() == {"accepted": 1, "event_ids": ["client-1"]}
    [event] = writer.sent
    assert event["event_id"] == "client-1"
    assert event["host"] == "real.host"
    assert event["received_at"].startswith("20") and not event["received_at"].startswith("1999")


def test_post_an_array(client, writer):
    response = client.post("/events", json=[{"event_type": "join_guild", "guild_id": "g1"}, {"event_type": "default"}])
    assert response.status_code == 202
    assert [e["event_type"] for e in writer.sent] == ["join_guild", "default"]


def test_field_errors_are_accepted_for_the_router_to_dead_letter(client, writer):
    response = client.post("/events", json={"event_type": "purchase_sword", "price": "abc"})
    assert response.status_code == 202
    assert writer.sent[0]["price"] == "abc"


@pytest.mark.parametrize(
    "data, status, reason",
    [
        (b"{not json", 400, "body is not valid JSON"),
        (b"", 400, "body is not valid JSON"),
        (b"[]", 400, "empty array"),
        (b'"a string"', 400, "an event must be a JSON object, got str"),
        (b'{"event_type": "fly_dragon"}', 400, "unknown event_type 'fly_dragon'"),
        (b'{"price": 1}', 400, "unknown event_type None"),
        (json.dumps([{"event_type": "default"}] * 6).encode(), 413, "6 events in one request; at most 5"),
        (b'{"event_type": "default", "pad": "' + b"x" * 3000 + b'"}', 413, "body larger than 2048 bytes"),
    ],
)
def test_bad_input_gets_a_4xx_with_a_reason_and_nothing_is_sent(client, writer, data, status, reason):
    response = client.post("/events", data=data, content_type="application/json")
    assert response.status_code == status
    assert reason in response.get_json()["error"]
    assert writer.sent == []


def test_one_bad_event_in_an_array_rejects_the_request_with_its_index(client, writer):
    response = client.post("/events", json=[{"event_type": "default"}, {"event_type": "nope"}])
    assert response.status_code == 400
    assert response.get_json()["rejected"] == [
        {
            "index": 1,
            "error": "unknown event_type 'nope'; known types: default, join_guild, leave_guild, "
            "level_up, purchase_sword",
        }
    ]
    assert writer.sent == []


def test_kafka_failure_is_a_503_so_the_client_retries(settings):
    app = make_app(settings, RecordingWriter(fail=True))
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


@pytest.mark.parametrize(
    "host, user",
    [
        ("user1.comcast.com", "user1"),
        ("user1.comcast.com:5000", "user1"),
        ("127.0.0.1:5000", None),
        ("localhost", None),
        ("comcast.com", None),
        ("[::1]:5000", None),
        ("", None),
        (None, None),
    ],
)
def test_user_id_from_the_host_header_as_in_the_seed(host, user):
    assert user_from_host(host) == user


def test_identity_and_time_fields(client, writer):
    client.post(
        "/events",
        headers={"Host": "user7.comcast.com"},
        json=[
            {"event_type": "default"},
            {
                "event_type": "default",
                "user_id": "player-42",
                "client_ts": "2026-11-29T09:00:00+01:00",
                "schema_version": 99,
            },
        ],
    )
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


@pytest.mark.parametrize(
    "data, reason",
    [
        (b'{"event_type": ["x"]}', "unknown event_type ['x']"),
        (b'{"event_type": {}}', "unknown event_type {}"),
        (b"[" * 100_000 + b"]" * 100_000, "body is not valid JSON"),
        (b'{"event_type": "default", "event_id": "a\\ud800"}', "body is not valid Unicode"),
    ],
)
def test_odd_input_is_a_400_not_a_crash(settings, writer, data, reason):
    client = make_app(settings, writer).test_client()
    response = client.post("/events", data=data, content_type="application/json")
    assert response.status_code == 400
    assert reason in response.get_json()["error"]
    assert writer.sent == []


def test_a_503_names_the_event_ids_to_retry_with(settings):
    client = make_app(settings, RecordingWriter(fail=True)).test_client()
    response = client.post("/events", json=[{"event_type": "default", "event_id": "mine"}, {"event_type": "default"}])
    assert response.status_code == 503
    ids = response.get_json()["event_ids"]
    assert ids[0] == "mine" and len(ids[1]) == 36


# All or nothing -----------------------------------------------------------------------------------


def test_an_oversized_event_in_the_middle_of_a_batch_sends_nothing(client, writer):
    batch = [{"event_type": "default"}, {"event_type": "default", "pad": "x" * 1500}, {"event_type": "default"}]
    response = client.post("/events", json=batch)  # 1.6 kB body, under 2048; the middle event is over once enveloped
    assert response.status_code == 202, response.get_json()
    writer.sent.clear()
    response = client.post("/events", json=batch, headers={"User-Agent": "u" * 600})
    assert response.status_code == 413
    body = response.get_json()
    assert body["rejected"][0]["index"] == 1 and "nothing was sent" in body["error"]
    assert writer.sent == []


def test_a_failure_after_producing_began_answers_with_every_event_id(settings):
    class HalfWay(RecordingWriter):
        def send(self, records):
            raise DeliveryError("produced 1 of 3 events, then: the queue is full")

    client = make_app(settings, HalfWay()).test_client()
    response = client.post("/events", json=[{"event_type": "default", "event_id": f"id-{i}"} for i in range(3)])
    assert response.status_code == 503 and response.headers["Retry-After"]
    assert response.get_json()["event_ids"] == ["id-0", "id-1", "id-2"]


# Kafka away ---------------------------------------------------------------------------------------


def test_kafka_known_away_is_a_503_with_retry_after_and_nothing_is_sent(settings):
    writer = RecordingWriter()
    writer.available, writer.state = False, "down"
    client = make_app(settings, writer).test_client()
    for response in (client.get("/purchase_a_sword"), client.post("/events", json={"event_type": "default"})):
        assert response.status_code == 503
        assert response.headers["Retry-After"] == "1"
    health = client.get("/healthz")
    assert (health.status_code, health.get_json()["state"]) == (503, "down")
    assert writer.sent == []


def test_the_writer_is_made_once_per_worker_on_first_use_and_not_kept_in_config(settings):
    made = []
    app = create_app({"SETTINGS": settings}, writer_factory=lambda s: made.append(s) or RecordingWriter())
    assert made == []  # nothing connects at app creation
    client = app.test_client()
    client.get("/"), client.get("/join_guild")
    assert len(made) == 1
    assert not any(isinstance(v, RecordingWriter) for v in app.config.values())


# event_ids ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("event_id", ["", "a b", "x" * 129, "é", "a/b", "a\nb", 42, 4.5, True, ["a"], {"a": 1}])
def test_an_invalid_event_id_is_a_400(client, writer, event_id):
    response = client.post("/events", json=[{"event_type": "default"}, {"event_type": "default", "event_id": event_id}])
    assert response.status_code == 400
    [rejected] = response.get_json()["rejected"]
    assert rejected["index"] == 1 and "event_id must be 1 to 128 characters" in rejected["error"]
    assert writer.sent == []


@pytest.mark.parametrize("event_id", ["a", "x" * 128, "game-1:level.2_retry-3", "550e8400-e29b-41d4-a716-446655440000"])
def test_valid_event_ids_are_kept(client, writer, event_id):
    assert client.post("/events", json={"event_type": "default", "event_id": event_id}).status_code == 202
    assert writer.sent[0]["event_id"] == event_id


def test_an_invalid_event_id_on_a_get_route_is_a_400(client, writer):
    assert client.get("/purchase_a_sword?event_id=a%20b").status_code == 400
    assert client.get("/purchase_a_sword?event_id=ok-1").status_code == 200
    assert [e["event_id"] for e in writer.sent] == ["ok-1"]


def test_made_event_ids_are_distinct_uuid4s():
    ids = new_event_ids(1000)
    assert len(set(ids)) == 1000
    assert all(uuid.UUID(i).version == 4 and str(uuid.UUID(i)) == i for i in ids)


def test_events_carry_the_envelope_in_catalog_order(client, writer):
    client.post(
        "/events",
        headers={"Host": "user7.comcast.com"},
        content_type="application/json",
        data=b'{"zz": 1, "event_type": "purchase_sword", "price": 2, "client_ts": "2026-11-29T09:00:00+00:00", '
        b'"event_id": "e1"}',
    )
    names = list(writer.sent[0])
    envelope = [f.name for f in ENVELOPE if f.name in names]
    assert names[: len(envelope)] == envelope
    assert names[len(envelope) :] == ["zz", "price"]
    assert writer.keys == [b"default/e1"]


# Write keys and sources ---------------------------------------------------------------------------


@pytest.fixture
def keyed(settings, tmp_path, writer):
    path = tmp_path / "write-keys.toml"
    path.write_text('# key = source\n"key-of-game-a-123" = "game-a"\n"key-of-game-b-456" = "game-b"\n')
    return make_app(settings.replace(write_keys=str(path)), writer).test_client()


@pytest.mark.parametrize(
    "headers, query",
    [
        ({}, ""),
        ({"Authorization": "Bearer wrong-key-000"}, ""),
        ({"Authorization": "Basic key-of-game-a-123"}, ""),
        ({}, "?key=nope"),
        ({"Authorization": "Bearer " + "k" * 1_000_000}, ""),
    ],
)
def test_keys_on_a_request_without_a_valid_key_is_a_401_and_nothing_is_sent(keyed, writer, headers, query):
    for response in (
        keyed.get("/purchase_a_sword" + query, headers=headers),
        keyed.post("/events" + query, json={"event_type": "default"}, headers=headers),
    ):
        assert response.status_code == 401
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
    assert writer.sent == []


def test_keys_on_each_event_records_its_keys_source(keyed, writer):
    assert (
        keyed.post(
            "/events",
            json={"event_type": "default", "event_id": "1", "source": "spoofed"},
            headers={"Authorization": "Bearer key-of-game-a-123"},
        ).status_code
        == 202
    )
    assert (
        keyed.post(
            "/events",
            json={"event_type": "default", "event_id": "1"},
            headers={"Authorization": "bearer key-of-game-b-456"},
        ).status_code
        == 202
    )
    assert keyed.get("/join_guild?key=key-of-game-b-456&guild_id=g").status_code == 200
    assert [(e["source"], e["event_id"]) for e in writer.sent[:2]] == [("game-a", "1"), ("game-b", "1")]
    assert writer.keys[:2] == [b"game-a/1", b"game-b/1"]
    assert "key" not in writer.sent[2] and writer.sent[2]["guild_id"] == "g"  # the key is no field


def test_keys_off_every_source_is_default_and_a_key_changes_nothing(client, writer):
    client.get("/purchase_a_sword?key=whatever", headers={"Authorization": "Bearer whatever-123"})
    assert writer.sent[0]["source"] == "default" and "key" not in writer.sent[0]


@pytest.mark.parametrize(
    "text, problem",
    [
        ("", "no keys"),
        ("not toml", "not valid TOML"),
        ('"short" = "a"', "8 to 256 printable"),
        ('"long-enough-key" = "bad source!"', "source of key #1"),
        ('"long-enough-key" = 3', "source of key #1"),
    ],
)
def test_a_malformed_key_file_stops_the_collector_with_the_reason(tmp_path, settings, text, problem):
    path = tmp_path / "keys.toml"
    path.write_text(text)
    with pytest.raises(KeyFileError, match=problem):
        make_app(settings.replace(write_keys=str(path)), RecordingWriter())


def test_a_missing_key_file_names_the_setting(settings, tmp_path):
    with pytest.raises(KeyFileError, match="QUESTLOG_WRITE_KEYS"):
        make_app(settings.replace(write_keys=str(tmp_path / "nope.toml")), RecordingWriter())


def test_key_file_changes_are_picked_up_and_bad_ones_refused(tmp_path):
    path = tmp_path / "keys.toml"
    path.write_text('"first-key-0001" = "a"\n')
    keys = WriteKeys(path, interval_s=0)
    assert keys.source_for("first-key-0001") == "a"
    path.write_text('"second-key-002" = "b"\n')
    assert (keys.source_for("first-key-0001"), keys.source_for("second-key-002")) == (None, "b")
    path.write_text("broken = = =")
    assert keys.source_for("second-key-002") == "b"


# Sizes and counts ---------------------------------------------------------------------------------


@pytest.fixture
def roomy(settings, writer):
    return make_app(settings.replace(max_body_bytes=900_000, max_batch_events=1000), writer).test_client()


@pytest.mark.parametrize(
    "content_type",
    ["text/plain", "application/x-www-form-urlencoded", "multipart/form-data; boundary=x", None, "application/jsonx"],
)
def test_post_events_takes_only_application_json(client, writer, content_type):
    headers = {"Content-Type": content_type} if content_type else {}
    response = client.post("/events", data=b'{"event_type": "default"}', headers=headers)
    assert response.status_code == 415
    assert response.json["error"].startswith("Content-Type must be application/json")
    assert writer.sent == []


def test_post_events_takes_application_json_with_a_charset(client, writer):
    response = client.post(
        "/events", data=b'{"event_type": "default"}', headers={"Content-Type": "application/json; charset=utf-8"}
    )
    assert response.status_code == 202 and len(writer.sent) == 1


@pytest.mark.parametrize("path", ["/", "/purchase_a_sword", "/join_guild"])
def test_head_records_nothing(client, writer, path):
    response = client.head(path)
    assert response.status_code == 405 and response.headers["Allow"] == "GET"
    assert writer.sent == []


def test_a_header_over_1024_characters_is_a_431(client, writer):
    assert client.get("/purchase_a_sword", headers={"User-Agent": "u" * 1024}).status_code == 200
    response = client.get("/purchase_a_sword", headers={"User-Agent": "u" * 1025})
    assert response.status_code == 431 and "longer than 1024 characters" in response.json["error"]
    assert len(writer.sent) == 1


def test_headers_copied_into_many_small_events_are_refused_by_the_amplification_bound(roomy, writer):
    events = [{"event_type": "default"}] * 1000
    long_headers = {"User-Agent": "u" * 1000, "Accept": "a" * 1000}
    response = roomy.post("/events", json=events, headers=long_headers)
    assert response.status_code == 413, response.json
    assert "times its own" in response.json["error"] and "at most 10 times" in response.json["error"]
    assert writer.sent == []
    # The same events with a client's usual headers (8.6x: an envelope on events of nothing but
    # their type), and the long headers on fewer events, are taken.
    assert roomy.post("/events", json=events, headers={"User-Agent": "python-requests/2.32.3"}).status_code == 202
    assert roomy.post("/events", json=events[:10], headers=long_headers).status_code == 202
    stored = sum(len(k) + len(v) for k, v in writer.records)
    assert len(writer.sent) == 1010 and stored < 10 * (len(json.dumps(events)) + 10 * 25 + 2000)


def test_a_huge_header_is_a_431_not_copied_into_every_event(roomy, writer):
    response = roomy.post("/events", json=[{"event_type": "default"}] * 1000, headers={"User-Agent": "u" * 1_000_000})
    assert response.status_code == 431
    assert writer.sent == []


@pytest.mark.parametrize(
    "data",
    [
        b'{"event_type": "default", ' + b", ".join(b'"f%d": 1' % i for i in range(80_000)) + b"}",  # 80,000 fields
        b'{"event_type": "default", "' + b"k" * 800_000 + b'": 1}',  # a 800 kB field name
        b'{"event_type": "default", "deep": '
        + b"[" * 1000
        + b"]" * 1000
        + b"}",  # orjson reads it, cannot write it back
        b'{"event_type": "default", "deep": ' + b"[" * 5000 + b"]" * 5000 + b"}",
        b'{"event_type": "default", "big": 123456789012345678901234567890}',
        b'{"event_type": "default", "nan": NaN}',
    ],
)
def test_sizes_and_counts_are_a_4xx_or_an_event_never_a_5xx(roomy, writer, data):
    response = roomy.post("/events", data=data, content_type="application/json")
    assert response.status_code in (202, 400, 413), response.get_data()[:300]
    if response.status_code == 202:
        assert len(writer.sent) == 1 and writer.sent[0]["event_type"] == "default"


def test_an_event_pushed_over_the_limit_by_its_envelope_is_a_413(settings, writer):
    client = make_app(settings.replace(max_body_bytes=1000), writer).test_client()
    pad = "x" * (1000 - len('[{"event_type": "default", "p": ""}]') - 10)
    body = json.dumps([{"event_type": "default", "p": pad}])
    assert len(body) < 1000
    response = client.post("/events", data=body, content_type="application/json")
    assert response.status_code == 413 and response.get_json()["rejected"][0]["index"] == 0
    assert writer.sent == []


def test_a_numbers_meaning_is_kept_for_the_router_to_judge(client, writer):
    client.post(
        "/events",
        data=b'{"event_type": "purchase_sword", "quantity": 123456789012345678901234567890}',
        content_type="application/json",
    )
    client.get("/purchase_a_sword?price=nan&quantity=1e999")
    assert writer.sent[0]["quantity"] == 123456789012345678901234567890
    assert (writer.sent[1]["price"], writer.sent[1]["quantity"]) == ("nan", "1e999")


@pytest.mark.parametrize(
    "data, long_run",
    [
        (b'{"n": 1234567890123456789}', False),  # 19 digits: orjson reads it exactly
        (b'{"n": 12345678901234567890}', True),
        (b'{"n": -0.00000000000000000001}', True),
        (b'{"s": "x12345678901234567890y"}', True),  # in a string: only the slower reading, same result
        (b'{"a": [1234567890, 1234567890, 1234567890]}', False),
        (b"", False),
    ],
)
def test_a_run_of_20_digits_is_found_wherever_it_is(data, long_run):
    from producer.envelope import _has_long_digit_run

    assert _has_long_digit_run(data) is long_run


def test_json_answers_are_written_whatever_a_reason_holds(app):
    with app.app_context():
        assert json.loads(app.json.response(accepted=1, event_ids=["a"]).get_data()) == {
            "accepted": 1,
            "event_ids": ["a"],
        }
        assert json.loads(app.json.response(error="\ud800 lone").get_data()) == {"error": "\ud800 lone"}


def test_a_long_unknown_event_type_gives_a_short_reason(client):
    response = client.post("/events", json={"event_type": "t" * 1500})
    assert response.status_code == 400 and len(response.get_json()["error"]) < 300
