"""Kafka authenticates every client and lets each stage do only its job (ops/stack/kafka_security.py):
each refusal here is Kafka's own answer on the running stack, beside the same request allowed to
the identity it belongs to."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import pytest
from confluent_kafka import Consumer, KafkaError, KafkaException, Producer, TopicPartition
from confluent_kafka.admin import NewTopic

from ops.stack import kafka_security
from questlog.kafka_admin import admin_client
from tests.helpers import read_topic

pytestmark = pytest.mark.integration


def as_user(settings, user: str):
    """The stack's settings as ``user`` (its password from the stack's 0600 file)."""
    return settings.replace(
        kafka_user=user, kafka_password_file=str(kafka_security.secrets_dir(settings) / user), kafka_password_env=""
    )


def produce_one(config: dict, topic: str, value: bytes, timeout_s: float = 15.0) -> KafkaError | None:
    """Kafka's answer to producing ``value`` to ``topic``: None once it has it, else the error."""
    errors: list = []
    done: list = []
    producer = Producer({**config, "message.timeout.ms": int(timeout_s * 1000), "log_level": 0})
    producer.produce(topic, value, on_delivery=lambda err, msg: (errors.append(err), done.append(1)))
    producer.flush(timeout_s + 5)
    assert done, "no delivery report"
    return errors[0]


def read_error(config: dict, topic: str, group: str, timeout_s: float = 15.0) -> KafkaError | None:
    """The error a consumer in ``group`` gets reading ``topic`` from its start (None: it read a record)."""
    consumer = Consumer({**config, "group.id": group, "auto.offset.reset": "earliest", "log_level": 0})
    consumer.subscribe([topic])
    try:
        for _ in range(int(timeout_s)):
            msg = consumer.poll(1.0)
            if msg is None:
                continue
            return msg.error()
    finally:
        consumer.close()
    raise AssertionError(f"neither a record nor an error from {topic} in {timeout_s}s")


def create_error(config: dict, topic: str) -> str | None:
    # the client held until its answer: a client collected meanwhile fails the future with _DESTROY
    admin = admin_client(config)
    future = admin.create_topics([NewTopic(topic, 1, 1)], request_timeout=15)[topic]
    try:
        future.result()
        return None
    except KafkaException as exc:
        return exc.args[0].name()


def delete_error(config: dict, topic: str) -> str | None:
    admin = admin_client(config)
    future = admin.delete_topics([topic], request_timeout=15)[topic]
    try:
        future.result()
        return None
    except KafkaException as exc:
        return exc.args[0].name()


def test_without_credentials_or_with_a_wrong_password_kafka_answers_nothing(live_settings):
    bare = {"bootstrap.servers": live_settings.kafka_bootstrap, "log_level": 0}
    with pytest.raises(KafkaException):  # a client that does not speak SASL is cut off
        admin_client(bare).list_topics(timeout=5)
    assert produce_one(bare, live_settings.raw_topic, b"{}", timeout_s=5) is not None
    broker_log = live_settings.home_path / "logs" / "kafka.log"
    refusals = broker_log.read_text(errors="replace").count("invalid credentials")
    wrong = {**as_user(live_settings, "questlog-collector").kafka_client(), "sasl.password": "not-the-password"}
    with pytest.raises(KafkaException):
        admin_client(wrong).list_topics(timeout=10)
    # librdkafka 2.16 reports it as a transport failure (_TRANSPORT); the broker says why
    assert broker_log.read_text(errors="replace").count("invalid credentials") > refusals
    assert produce_one(wrong, live_settings.raw_topic, b"{}", timeout_s=5) is not None
    impostor = {**wrong, "sasl.username": "questlog-admin"}  # naming the admin is not being it
    with pytest.raises(KafkaException):
        admin_client(impostor).list_topics(timeout=10)


def test_the_collector_may_write_the_raw_topic_and_nothing_else(live_settings):
    run = uuid.uuid4().hex
    collector = as_user(live_settings, "questlog-collector").kafka_client()
    assert produce_one(collector, live_settings.raw_topic, f'{{"event_id": "{run}"}}'.encode()) is None
    typed = live_settings.topic_for("level_up")
    assert produce_one(collector, typed, b"{}").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read_error(collector, live_settings.raw_topic, live_settings.router_id).code() in (
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    )
    assert create_error(collector, f"{live_settings.raw_topic}.x{run[:8]}") == "TOPIC_AUTHORIZATION_FAILED"
    assert delete_error(collector, typed) == "TOPIC_AUTHORIZATION_FAILED"


def test_the_router_reads_raw_writes_typed_and_may_not_write_raw_create_or_delete(live_settings):
    run = uuid.uuid4().hex
    router = as_user(live_settings, "questlog-router").kafka_client()
    typed = live_settings.topic_for("level_up")
    # skipping validation by writing raw events as the router is refused
    assert produce_one(router, live_settings.raw_topic, b"{}").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert produce_one(router, typed, f'{{"event_id": "{run}-r"}}'.encode()) is None
    assert read_error(router, typed, f"not-{live_settings.router_id}-{run}").code() in (
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    )
    assert create_error(router, f"{live_settings.raw_topic}.x{run[:8]}") == "TOPIC_AUTHORIZATION_FAILED"
    assert delete_error(router, typed) == "TOPIC_AUTHORIZATION_FAILED"
    assert delete_error(router, live_settings.raw_topic) == "TOPIC_AUTHORIZATION_FAILED"


def test_the_sink_reads_typed_topics_and_may_not_write_or_read_raw(live_settings):
    run = uuid.uuid4().hex
    sink = as_user(live_settings, "questlog-sink").kafka_client()
    typed = live_settings.topic_for("join_guild")
    # claiming dedupe keys ahead of real events by writing typed records is refused
    assert produce_one(sink, typed, f'{{"event_id": "{run}"}}'.encode()).code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert read_error(sink, live_settings.raw_topic, f"spark-kafka-source-{run}").code() in (
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
        KafkaError.GROUP_AUTHORIZATION_FAILED,
    )
    consumer = Consumer({**sink, "group.id": f"spark-kafka-source-{run}", "log_level": 0})
    try:  # what Spark's Kafka source does: assign, read
        low, high = consumer.get_watermark_offsets(TopicPartition(typed, 0), timeout=15)
        assert high >= low >= 0
    finally:
        consumer.close()
    assert create_error(sink, f"{live_settings.raw_topic}.x{run[:8]}") == "TOPIC_AUTHORIZATION_FAILED"
    assert delete_error(sink, typed) == "TOPIC_AUTHORIZATION_FAILED"


def test_the_compactor_may_describe_the_routers_progress_and_nothing_more(live_settings):
    """The erasure of forgotten players waits for the router's committed offsets and the topics'
    ends (compactor/erasure.py): its user may ask those, and may not read, write or create."""
    run = uuid.uuid4().hex
    compactor = as_user(live_settings, "questlog-compactor").kafka_client()
    raw, typed = live_settings.raw_topic, live_settings.topic_for("level_up")
    consumer = Consumer({**compactor, "group.id": live_settings.router_id, "enable.auto.commit": False, "log_level": 0})
    try:  # what Eraser.settled asks
        low, high = consumer.get_watermark_offsets(TopicPartition(raw, 0), timeout=15)
        assert high >= low >= 0
        assert consumer.get_watermark_offsets(TopicPartition(typed, 0), timeout=15)[1] >= 0
        [committed] = consumer.committed([TopicPartition(raw, 0)], timeout=15)
        assert committed.error is None
    finally:
        consumer.close()
    assert read_error(compactor, raw, live_settings.router_id).code() in (
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    )
    assert read_error(compactor, typed, f"spark-kafka-source-{run}").code() in (
        KafkaError.GROUP_AUTHORIZATION_FAILED,
        KafkaError.TOPIC_AUTHORIZATION_FAILED,
    )
    assert produce_one(compactor, raw, b"{}").code() == KafkaError.TOPIC_AUTHORIZATION_FAILED
    assert create_error(compactor, f"{live_settings.raw_topic}.x{run[:8]}") == "TOPIC_AUTHORIZATION_FAILED"
    assert delete_error(compactor, typed) == "TOPIC_AUTHORIZATION_FAILED"


def test_every_stage_works_as_its_own_user_end_to_end(live_settings):
    """The collector's write, the router's copy and the sink's table, each as its own user."""
    import requests

    from tests.helpers import count_when

    run = uuid.uuid4().hex
    response = requests.post(
        f"{live_settings.collector_url}/events",
        json={"event_type": "level_up", "event_id": run, "level": 3},
        timeout=10,
    )
    assert response.status_code == 202, response.text
    [typed] = read_topic(live_settings, live_settings.topic_for("level_up"), lambda r: r.get("event_id") == run, 1)
    assert typed["level"] == 3
    assert count_when(live_settings, f"SELECT count(*) FROM level_ups WHERE event_id = '{run}'", 1, timeout_s=180) == 1


def test_credentials_are_0600_files_and_on_no_command_line(pipeline, live_settings):
    directory = kafka_security.secrets_dir(live_settings)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    passwords = {}
    for user in (kafka_security.BROKER_USER, *kafka_security.SCRAM_USERS):
        path = directory / user
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
        passwords[user] = path.read_text().strip()
    conf = live_settings.home_path / "conf" / "kafka" / "server.properties"
    assert stat.S_IMODE(conf.stat().st_mode) == 0o600  # it holds the broker's own password
    seen = 0
    for proc in Path("/proc").iterdir():
        if not proc.name.isdigit():
            continue
        try:
            argv = (proc / "cmdline").read_bytes()
        except OSError:
            continue
        seen += 1
        for user, password in passwords.items():
            assert password.encode() not in argv, f"{user}'s password on the command line of pid {proc.name}"
    assert seen > 10
