"""Topic creation against the real broker: a topic Kafka refuses for good costs no other topic."""

import uuid

import pytest

from questlog.kafka_admin import admin_client, ensure_topics

pytestmark = pytest.mark.integration


def test_a_topic_kafka_refuses_is_reported_and_the_others_are_created(live_settings):
    run = f"admin_{uuid.uuid4().hex[:8]}"
    bootstrap = live_settings.kafka_client()
    assert ensure_topics(bootstrap, [f"{run}_open_chest"]) == {}
    # `.` and `_` collide in Kafka's metric names: this one can never be created beside the first
    refused = ensure_topics(bootstrap, [f"{run}.open_chest", f"{run}.level_up", f"{run}.join_guild"])
    assert list(refused) == [f"{run}.open_chest"]
    assert refused[f"{run}.open_chest"].startswith("TOPIC_EXCEPTION: ")
    assert "collides" in refused[f"{run}.open_chest"]
    existing = admin_client(bootstrap).list_topics(timeout=30).topics
    assert {f"{run}.level_up", f"{run}.join_guild"} <= set(existing)
    assert f"{run}.open_chest" not in existing


def topic_configs(kafka: dict, topic: str) -> dict[str, str]:
    from confluent_kafka.admin import ConfigResource, ResourceType

    resource = ConfigResource(ResourceType.TOPIC, topic)
    admin = admin_client(kafka)  # held until the answer came: a client collected meanwhile fails it
    return {k: v.value for k, v in admin.describe_configs([resource])[resource].result().items()}


def test_topics_get_the_copies_the_brokers_allow_and_their_durability_configs(live_settings):
    from questlog.kafka_admin import ReplicationError, faust_leader_topic

    s, run = live_settings, f"copies_{uuid.uuid4().hex[:8]}"
    assert ensure_topics(s.kafka_client(), [f"{run}_a"], 2) == {}
    metadata = admin_client(s.kafka_client()).list_topics(timeout=30)
    assert len(metadata.brokers) == 1  # the default stack: one broker, so one copy
    assert {len(p.replicas) for p in metadata.topics[f"{run}_a"].partitions.values()} == {1}
    configs = topic_configs(s.kafka_client(), f"{run}_a")
    assert (configs["min.insync.replicas"], configs["unclean.leader.election.enable"]) == ("1", "false")

    # more copies than brokers: a clear error naming the setting, and no topic made with fewer
    with pytest.raises(ReplicationError, match="QUESTLOG_TOPIC_REPLICATION=2, but 1 Kafka broker is up"):
        ensure_topics(s.kafka_client(), [f"{run}_b"], replication=2)
    assert f"{run}_b" not in admin_client(s.kafka_client()).list_topics(timeout=30).topics

    # every topic the stack made (the pipeline's, Faust's leader topic, the sessions agent's) has them
    stack_topics = [s.raw_topic, s.dlq_topic, s.topic_for("level_up"), faust_leader_topic(s)]
    if s.sessions:
        stack_topics += [s.activity_topic, s.sessions_changelog_topic]
    for topic in stack_topics:
        configs = topic_configs(s.kafka_client(), topic)
        assert (configs["min.insync.replicas"], configs["unclean.leader.election.enable"]) == ("1", "false"), topic
