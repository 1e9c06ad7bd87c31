"""Topic creation against the real broker: a topic Kafka refuses for good costs no other topic."""

import uuid

import pytest

from questlog.kafka_admin import admin_client, ensure_topics

pytestmark = pytest.mark.integration


def test_a_topic_kafka_refuses_is_reported_and_the_others_are_created(live_settings):
    run = f"admin_{uuid.uuid4().hex[:8]}"
    bootstrap = live_settings.kafka_bootstrap
    assert ensure_topics(bootstrap, [f"{run}_open_chest"]) == {}
    # `.` and `_` collide in Kafka's metric names: this one can never be created beside the first
    refused = ensure_topics(bootstrap, [f"{run}.open_chest", f"{run}.level_up", f"{run}.join_guild"])
    assert list(refused) == [f"{run}.open_chest"]
    assert refused[f"{run}.open_chest"].startswith("TOPIC_EXCEPTION: ")
    assert "collides" in refused[f"{run}.open_chest"]
    existing = admin_client(bootstrap).list_topics(timeout=30).topics
    assert {f"{run}.level_up", f"{run}.join_guild"} <= set(existing)
    assert f"{run}.open_chest" not in existing
