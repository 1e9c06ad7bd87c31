"""The stages' Kafka rights (ops.stack.kafka_security.acls) and the broker's private config file,
no services."""

from __future__ import annotations

import stat

from confluent_kafka.admin import AclOperation, ResourcePatternType

from ops.stack import kafka_security, services
from questlog.settings import Settings


def rights(settings: Settings, user: str, topic: str) -> set[AclOperation]:
    """What ``user`` may do on ``topic`` by the bindings (a literal name or a prefix of it)."""
    out = set()
    for b in kafka_security.acls(settings):
        if b.principal != f"User:{user}" or b.restype.name != "TOPIC":
            continue
        literal = b.resource_pattern_type == ResourcePatternType.LITERAL
        if (literal and b.name == topic) or (not literal and topic.startswith(b.name)):
            out.add(b.operation)
    return out


def test_a_dead_letter_topic_outside_the_raw_topics_prefix_gets_the_same_rights():
    router, sink = kafka_security.STAGE_USERS["router"], kafka_security.STAGE_USERS["sink"]
    collector = kafka_security.STAGE_USERS["collector"]
    default = Settings.from_env({})
    assert AclOperation.WRITE in rights(default, router, default.dlq_topic)
    moved = default.replace(dlq_topic="studio-dead-letters")
    assert {AclOperation.WRITE, AclOperation.DESCRIBE} <= rights(moved, router, "studio-dead-letters")
    assert AclOperation.READ in rights(moved, sink, "studio-dead-letters")
    assert AclOperation.WRITE not in rights(moved, sink, "studio-dead-letters")
    assert rights(moved, collector, "studio-dead-letters") == set()


def test_a_private_file_is_made_0600_in_a_0700_directory_even_over_an_older_one(tmp_path):
    path = tmp_path / "conf" / "kafka" / "server.properties"
    path.parent.mkdir(parents=True)
    path.write_text("old")
    path.chmod(0o644)  # left by an older version
    services._write(path, "sasl.jaas.config=secret\n", private=True)
    assert path.read_text() == "sasl.jaas.config=secret\n"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
