"""Copies of every topic Questlog creates: from the settings, else from the brokers up."""

import pytest

from questlog.kafka_admin import ReplicationError, durability_config, min_insync_for, replication_for


@pytest.mark.parametrize(("brokers", "copies"), [(1, 1), (2, 2), (3, 3), (5, 3)])
def test_automatic_copies_are_as_many_as_the_brokers_up_at_most_three(brokers, copies):
    assert replication_for(0, brokers) == copies


def test_copies_set_are_kept_and_more_than_the_brokers_up_are_refused_naming_the_setting():
    assert replication_for(2, 3) == 2
    with pytest.raises(ReplicationError, match=r"QUESTLOG_TOPIC_REPLICATION=3, but 1 Kafka broker is up"):
        replication_for(3, 1)
    with pytest.raises(ReplicationError, match="QUESTLOG_TOPIC_REPLICATION=-1"):
        replication_for(-1, 3)


@pytest.mark.parametrize(("copies", "insync"), [(1, 1), (2, 1), (3, 2), (5, 4)])
def test_automatic_min_insync_is_one_less_than_the_copies_at_least_one(copies, insync):
    assert min_insync_for(0, copies) == insync


def test_min_insync_set_must_be_between_one_and_the_copies():
    assert min_insync_for(3, 3) == 3
    for wrong in (4, -1):
        with pytest.raises(ReplicationError, match=f"QUESTLOG_MIN_INSYNC_REPLICAS={wrong} with 3 copies"):
            min_insync_for(wrong, 3)


def test_every_topic_has_its_min_insync_and_no_unclean_leader_election():
    assert durability_config(2) == {"min.insync.replicas": "2", "unclean.leader.election.enable": "false"}


def test_the_local_stack_refuses_copies_its_one_broker_cannot_give_before_starting_anything(settings):
    from ops.stack.runner import Pipeline

    pipeline = Pipeline(settings.replace(topic_replication=3))
    with pytest.raises(ReplicationError, match="QUESTLOG_TOPIC_REPLICATION=3, but 1 Kafka broker is up"):
        pipeline.up()
    assert pipeline.started == []  # nothing was fetched or started
