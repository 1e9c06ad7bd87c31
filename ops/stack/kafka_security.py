"""Kafka's identities in the local stack: who may do what, and their generated passwords.

Every client authenticates over SASL (SCRAM-SHA-512) as its stage's user and may do only its job
(ACLs, `acls()`); the broker refuses everyone else (`allow.everyone.if.no.acl.found=false`):

| user | may |
| --- | --- |
| `questlog-admin` | everything (a super user): create topics, set ACLs; the operator's tools and the tests |
| `questlog-collector` | write (and describe) the raw topic |
| `questlog-router` | read the raw topic in its consumer group, write `<raw>.*` (typed topics, dead letters, sessions), its own internal topics `<router id>-*` |
| `questlog-sink` | read `<raw>.*` in Spark's consumer groups |
| `questlog-compactor` | describe the pipeline's topics and the router's group: the erasure of forgotten players waits for the router's committed offsets and the topics' ends (compactor/erasure.py); it reads and writes no record |

The broker's own identity `questlog-broker` (inter-broker and controller traffic, a super user)
logs in with SASL/PLAIN against the JAAS entry in its server.properties (0600): SCRAM users live
in the cluster's metadata, so they are made by the broker's identity once the broker answers, at
every start (`provision`), which also brings a stack made before this to the same users.
Passwords are generated at first start into `$QUESTLOG_HOME/secrets/kafka/<user>` (0600, in a
0700 directory), read from there by each process, never printed, never on a command line.
"""

from __future__ import annotations

import logging
from pathlib import Path

from confluent_kafka.admin import (
    AclBinding,
    AclOperation,
    AclPermissionType,
    ResourcePatternType,
    ResourceType,
    ScramCredentialInfo,
    ScramMechanism,
    UserScramCredentialAlteration,
    UserScramCredentialUpsertion,
)

from ops.stack.secret_files import generated_secret
from questlog.kafka_admin import admin_client
from questlog.settings import Settings

log = logging.getLogger(__name__)

BROKER_USER = "questlog-broker"
ADMIN_USER = "questlog-admin"
# The user each stage's process runs as (ops.stack.services gives it QUESTLOG_KAFKA_USER).
STAGE_USERS = {
    "collector": "questlog-collector",
    "router": "questlog-router",
    "sink": "questlog-sink",
    "compactor": "questlog-compactor",
}
SCRAM_USERS = (ADMIN_USER, *STAGE_USERS.values())
SCRAM_ITERATIONS = 8192


def secrets_dir(settings: Settings) -> Path:
    """Where the stack's Kafka passwords are: beside QUESTLOG_KAFKA_PASSWORD_FILE when it names one
    (a process of another home speaking to this stack's Kafka), else `$QUESTLOG_HOME/secrets/kafka`."""
    if settings.kafka_password_file:
        return Path(settings.kafka_password_file).parent
    return settings.home_path / "secrets" / "kafka"


def ensure_password(settings: Settings, user: str) -> str:
    """``user``'s password, generated into its 0600 file on first use."""
    return generated_secret(secrets_dir(settings) / user)


def ensure_passwords(settings: Settings) -> None:
    for user in (BROKER_USER, *SCRAM_USERS):
        ensure_password(settings, user)


def broker_client(settings: Settings) -> dict[str, str]:
    """librdkafka's configuration for the broker's own identity (SASL/PLAIN)."""
    return {
        **settings.kafka_client(),
        "security.protocol": "SASL_PLAINTEXT",
        "sasl.mechanism": "PLAIN",
        "sasl.username": BROKER_USER,
        "sasl.password": ensure_password(settings, BROKER_USER),
    }


def _jaas_plain(password: str) -> str:
    return (
        "org.apache.kafka.common.security.plain.PlainLoginModule required "
        f'username="{BROKER_USER}" password="{password}" user_{BROKER_USER}="{password}";'
    )


def broker_properties(settings: Settings) -> dict[str, str]:
    """server.properties of a broker that authenticates every client and authorizes by ACL."""
    password = ensure_password(settings, BROKER_USER)
    return {
        "listener.security.protocol.map": "SASL_PLAINTEXT:SASL_PLAINTEXT,CONTROLLER:SASL_PLAINTEXT",
        "inter.broker.listener.name": "SASL_PLAINTEXT",
        "sasl.enabled.mechanisms": "SCRAM-SHA-512,PLAIN",
        "sasl.mechanism.inter.broker.protocol": "PLAIN",
        "sasl.mechanism.controller.protocol": "PLAIN",
        "listener.name.controller.sasl.enabled.mechanisms": "PLAIN",
        "listener.name.controller.plain.sasl.jaas.config": _jaas_plain(password),
        "listener.name.sasl_plaintext.plain.sasl.jaas.config": _jaas_plain(password),
        "listener.name.sasl_plaintext.scram-sha-512.sasl.jaas.config": (
            "org.apache.kafka.common.security.scram.ScramLoginModule required;"
        ),
        "authorizer.class.name": "org.apache.kafka.metadata.authorizer.StandardAuthorizer",
        "super.users": f"User:{BROKER_USER};User:{ADMIN_USER}",
        "allow.everyone.if.no.acl.found": "false",
        "auto.create.topics.enable": "false",
    }


def _allow(user: str, kind: ResourceType, name: str, pattern: ResourcePatternType, *ops: AclOperation):
    return [AclBinding(kind, name, pattern, f"User:{user}", "*", op, AclPermissionType.ALLOW) for op in ops]


def acls(settings: Settings) -> list[AclBinding]:
    """What each stage may do, and nothing more."""
    topic, group = ResourceType.TOPIC, ResourceType.GROUP
    literal, prefixed = ResourcePatternType.LITERAL, ResourcePatternType.PREFIXED
    read, write, describe = AclOperation.READ, AclOperation.WRITE, AclOperation.DESCRIBE
    raw, typed = settings.raw_topic, settings.raw_topic + "."
    collector, router, sink = STAGE_USERS["collector"], STAGE_USERS["router"], STAGE_USERS["sink"]
    compactor = STAGE_USERS["compactor"]
    return [
        *_allow(collector, topic, raw, literal, write, describe),
        *_allow(router, topic, raw, literal, read, describe),
        *_allow(router, topic, typed, prefixed, write, describe),
        *_allow(router, group, settings.router_id, literal, read, describe),
        # Faust's own topics (the activity topic, the sessions table's changelog, its assignor's)
        *_allow(router, topic, settings.router_id + "-", prefixed, AclOperation.ALL),
        *_allow(sink, topic, typed, prefixed, read, describe),
        *_allow(sink, group, "spark-kafka-source-", prefixed, read, describe),
        # the erasure's wait (compactor/erasure.py): the topics' ends and the router's committed
        # offsets, nothing read, written, joined or committed
        *_allow(compactor, topic, raw, literal, describe),
        *_allow(compactor, topic, typed, prefixed, describe),
        *_allow(compactor, group, settings.router_id, literal, describe),
        # the dead letters' topic when QUESTLOG_DLQ_TOPIC puts it outside `<raw topic>.`
        *(
            []
            if settings.dlq_topic.startswith(typed)
            else [
                *_allow(router, topic, settings.dlq_topic, literal, write, describe),
                *_allow(sink, topic, settings.dlq_topic, literal, read, describe),
                *_allow(compactor, topic, settings.dlq_topic, literal, describe),
            ]
        ),
    ]


def grant(settings: Settings, timeout_s: float = 30.0) -> None:
    """As the broker's identity: the ACLs of ``settings``' topics and router group (the bench's
    and a test's own raw topic get the same rights as the pipeline's)."""
    admin = admin_client(broker_client(settings))
    for future in admin.create_acls(acls(settings), request_timeout=timeout_s).values():
        future.result()


def provision(settings: Settings, timeout_s: float = 30.0) -> None:
    """As the broker's identity: every SCRAM user with its password, and every ACL (both idempotent)."""
    admin = admin_client(broker_client(settings))
    upserts: list[UserScramCredentialAlteration] = [
        UserScramCredentialUpsertion(
            user,
            ScramCredentialInfo(ScramMechanism.SCRAM_SHA_512, SCRAM_ITERATIONS),
            ensure_password(settings, user).encode(),
        )
        for user in SCRAM_USERS
    ]
    for future in admin.alter_user_scram_credentials(upserts, request_timeout=timeout_s).values():
        future.result()
    for future in admin.create_acls(acls(settings), request_timeout=timeout_s).values():
        future.result()
