"""Topic creation shared by the stack runner, the router, the sink and compose's `topics` service.

`python -m questlog.kafka_admin` creates every topic of the pipeline (`Catalog.topics`) for the
settings in the environment: compose runs it before the stages start."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

from confluent_kafka import KafkaException
from confluent_kafka.admin import AdminClient, AlterConfigOpType, ConfigEntry, ConfigResource, NewPartitions, NewTopic

if TYPE_CHECKING:
    from questlog.catalog import Catalog
    from questlog.settings import Settings

log = logging.getLogger(__name__)

# What Kafka answers a topic creation it will never accept as asked: retrying cannot help, so the
# topic is reported refused and the others go on (a catalog type whose topic Kafka refuses stalls
# no other type).
PERMANENT_CREATE_ERRORS = frozenset(
    {
        # INVALID_TOPIC_EXCEPTION, as librdkafka names it: a name Kafka cannot take, or one that
        # collides with an existing topic's (`a.b` and `a_b`)
        "TOPIC_EXCEPTION",
        "TOPIC_AUTHORIZATION_FAILED",
        "CLUSTER_AUTHORIZATION_FAILED",
        "POLICY_VIOLATION",
        "INVALID_CONFIG",
        "INVALID_REPLICATION_FACTOR",
    }
)


def admin_client(kafka: str | Mapping[str, str]) -> AdminClient:
    """An admin client for ``kafka`` (Settings.kafka_client(), or a bootstrap address without
    authentication) that logs only warnings and errors: librdkafka's informational lines
    (``%6|...|BGQUEUE|...`` when a client is closed) would otherwise reach the user's terminal."""
    config = {"bootstrap.servers": kafka} if isinstance(kafka, str) else dict(kafka)
    return AdminClient({**config, "log_level": 4})


# Kafka's default, stated: a replica that missed acknowledged writes never becomes the leader
# (it would drop them); a partition without an in-sync replica waits for one instead.
UNCLEAN_LEADER_ELECTION = "false"


class ReplicationError(ValueError):
    """QUESTLOG_TOPIC_REPLICATION or QUESTLOG_MIN_INSYNC_REPLICAS that this cluster cannot give."""


def replication_for(wanted: int, brokers: int) -> int:
    """The replication factor of a topic made now: ``wanted`` (QUESTLOG_TOPIC_REPLICATION) if set,
    else as many copies as ``brokers`` (those up) allow, at most 3."""
    if wanted < 0:
        raise ReplicationError(f"QUESTLOG_TOPIC_REPLICATION={wanted}: a number of copies, 1 or more (0: automatic)")
    if wanted == 0:
        return max(1, min(3, brokers))
    if wanted > brokers:
        raise ReplicationError(
            f"QUESTLOG_TOPIC_REPLICATION={wanted}, but {brokers} Kafka broker{'s are' if brokers != 1 else ' is'} up: "
            "a topic cannot have more copies than brokers (start more brokers, or lower the setting)"
        )
    return wanted


def min_insync_for(wanted: int, replication: int) -> int:
    """min.insync.replicas for a topic of ``replication`` copies: ``wanted``
    (QUESTLOG_MIN_INSYNC_REPLICAS) if set, else one less than the copies (2 of 3), at least 1."""
    if wanted == 0:
        return max(1, replication - 1)
    if not 1 <= wanted <= replication:
        raise ReplicationError(
            f"QUESTLOG_MIN_INSYNC_REPLICAS={wanted} with {replication} cop{'ies' if replication != 1 else 'y'} "
            "of each partition: it must be between 1 and the replication (else no write is ever acknowledged)"
        )
    return wanted


def durability_config(min_insync: int) -> dict[str, str]:
    """The topic configs that make an acknowledged record survive a broker's death."""
    return {"min.insync.replicas": str(min_insync), "unclean.leader.election.enable": UNCLEAN_LEADER_ELECTION}


def ensure_topics(
    kafka: str | Mapping[str, str],
    topics: Iterable[str],
    partitions: int = 1,
    timeout_s: float = 30.0,
    config: dict[str, str] | None = None,
    replication: int = 0,
    min_insync: int = 0,
) -> dict[str, str]:
    """Create the topics that do not exist yet with ``partitions`` partitions, ``replication``
    copies (0: as many as the brokers up allow, at most 3; see `replication_for`) and ``config``
    plus min.insync.replicas and unclean leader election off; grow existing ones that have fewer
    partitions (so that raising QUESTLOG_TOPIC_PARTITIONS lets more router workers share the raw
    topic) and give them the same configs (their min.insync.replicas capped by the copies they
    have); a topic is never shrunk. ``kafka``: Settings.kafka_client(), or a bootstrap address
    without authentication. Returns the topics Kafka refused for good
    (PERMANENT_CREATE_ERRORS), each with Kafka's reason, after creating every other one; raises
    ReplicationError for copies the cluster cannot give, and anything else (Kafka away: try again)."""
    admin = admin_client(kafka)
    metadata = admin.list_topics(timeout=timeout_s)
    existing = metadata.topics
    copies = replication_for(replication, len(metadata.brokers))
    insync = min_insync_for(min_insync, copies)
    wanted = list(dict.fromkeys(topics))
    create = [
        NewTopic(
            t,
            num_partitions=partitions,
            replication_factor=copies,
            config={**(config or {}), **durability_config(insync)},
        )
        for t in wanted
        if t not in existing
    ]
    grow = [NewPartitions(t, partitions) for t in wanted if t in existing and len(existing[t].partitions) < partitions]
    if older := [t for t in wanted if t in existing]:  # a stack made before the settings
        resources = []
        for t in older:
            has = min((len(p.replicas) for p in existing[t].partitions.values()), default=1)
            if has < copies:
                log.warning(
                    "topic %s has %d cop%s of each partition, fewer than %d: Kafka does not add copies to an "
                    "existing topic by itself (kafka-reassign-partitions.sh does)",
                    t,
                    has,
                    "ies" if has != 1 else "y",
                    copies,
                )
            entries = {**(config or {}), **durability_config(min(insync, has))}
            resources.append(
                ConfigResource(
                    ConfigResource.Type.TOPIC,
                    t,
                    incremental_configs=[
                        ConfigEntry(k, v, incremental_operation=AlterConfigOpType.SET) for k, v in entries.items()
                    ],
                )
            )
        for future in admin.incremental_alter_configs(resources, request_timeout=timeout_s).values():
            future.result()
    refused: dict[str, str] = {}
    if create:
        for topic, future in admin.create_topics(create, request_timeout=timeout_s).items():
            try:
                future.result()
                log.info("created topic %s", topic)
            except KafkaException as exc:
                error = exc.args[0]
                if error.name() in PERMANENT_CREATE_ERRORS:
                    refused[topic] = f"{error.name()}: {error.str()}"
                    log.error("Kafka refuses to create topic %s: %s", topic, refused[topic])
                elif error.name() != "TOPIC_ALREADY_EXISTS":
                    raise
    if grow:
        for topic, future in admin.create_partitions(grow, request_timeout=timeout_s).items():
            try:
                future.result()
                log.info("topic %s now has %d partitions", topic, partitions)
            except KafkaException as exc:
                if exc.args[0].name() != "INVALID_PARTITIONS":  # grown meanwhile by another caller
                    raise
    return refused


def retention_config(settings: Settings) -> dict[str, str]:
    """A pipeline topic's size bound: each partition keeps at most QUESTLOG_TOPIC_RETENTION_BYTES
    (Kafka deletes whole closed segments, so a partition holds up to that plus one segment: segments
    of an eighth of it, at most Kafka's default 1 GiB)."""
    segment = max(2**20, min(2**30, settings.topic_retention_bytes // 8))
    return {
        "retention.bytes": str(settings.topic_retention_bytes),
        "segment.bytes": str(segment),
        # and its time bound (QUESTLOG_KAFKA_RETENTION_H; 0: none): what a forgotten player left
        # in Kafka is gone after the first of the two (docs/privacy.md)
        "retention.ms": str(int(settings.kafka_retention_h * 3_600_000)) if settings.kafka_retention_h > 0 else "-1",
    }


def changelog_config(settings: Settings) -> dict[str, str]:
    """The sessions table's changelog: compacted, as Faust makes it, and within a bounded time (a
    forgotten player's entry is a tombstone there, docs/privacy.md): a segment rolls after
    QUESTLOG_SESSIONS_CHANGELOG_CLEAN_S (the active one is never compacted), a record is compacted at
    the latest that long after it came, and a tombstone is kept that long after."""
    ms = str(round(settings.sessions_changelog_clean_s * 1000))
    return {"cleanup.policy": "compact", "segment.ms": ms, "max.compaction.lag.ms": ms, "delete.retention.ms": ms}


def ensure_pipeline_topics(settings: Settings, catalog: Catalog, timeout_s: float = 30.0) -> list[str]:
    """Create (or grow) every topic of the pipeline, as ``catalog.topics`` names them; return those
    that exist now (a topic Kafka refused for good is logged and left out)."""
    topics = catalog.topics(settings.raw_topic, settings.dlq_topic)
    retention = retention_config(settings)
    kafka = settings.kafka_client()
    copies: dict[str, Any] = {"replication": settings.topic_replication, "min_insync": settings.min_insync_replicas}
    refused = ensure_topics(kafka, topics, settings.topic_partitions, timeout_s=timeout_s, config=retention, **copies)
    topics = [t for t in topics if t not in refused]
    # Faust's leader election topic (one partition), made here with the pipeline's copies: Faust
    # would make it with its app's replication factor, fixed before it knows the brokers up
    ensure_topics(kafka, [faust_leader_topic(settings)], 1, timeout_s=timeout_s, **copies)
    if settings.sessions:
        # The router's own topics for agent ``sessions``, made before its first worker joins: Faust
        # makes them too, but a group that formed before they were known leaves them unassigned
        # until its next metadata refresh (minutes). The table's changelog is compacted, as Faust's.
        ensure_topics(
            kafka, [settings.activity_topic], settings.topic_partitions, timeout_s=timeout_s, config=retention, **copies
        )
        ensure_topics(
            kafka,
            [settings.sessions_changelog_topic],
            settings.topic_partitions,
            timeout_s=timeout_s,
            config=changelog_config(settings),
            **copies,
        )
        topics = [*topics, settings.activity_topic, settings.sessions_changelog_topic]
    return topics


def faust_leader_topic(settings: Settings) -> str:
    """The topic Faust's leader assignor makes for the router's app (faust.assignor.LeaderAssignor)."""
    return f"{settings.router_id}-__assignor-__leader"


def deploy_with_topics(settings: Settings, schemas, dry_run: bool = False) -> tuple[Catalog, list[str]]:
    """`questlog catalog deploy`: check the schemas against the deployed catalog, create (as this
    process's Kafka user, the admin) the topics of the new catalog, then write it; so a stage never
    sees a type without its topic (the router and the sink may not create topics). Raises what
    ``questlog.catalog.evolution.deploy`` raises, before anything is created."""
    from questlog.catalog.evolution import deploy

    new, changes = deploy(schemas, settings.catalog, dry_run=True, home=settings.home)
    if dry_run:
        return new, changes
    try:
        ensure_pipeline_topics(settings, new, timeout_s=10.0)
    except (KafkaException, RuntimeError) as exc:  # no Kafka (or no credentials) here: nothing runs on it
        note = f"topics not created ({str(exc)[:200]}): `questlog run` creates them as it starts"
        log.warning("%s", note)
        return deploy(schemas, settings.catalog, home=settings.home)[0], [*changes, note]
    return deploy(schemas, settings.catalog, home=settings.home)


def main() -> None:
    from questlog.catalog.watch import CatalogSource
    from questlog.settings import Settings

    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    settings = Settings.from_env()
    topics = ensure_pipeline_topics(settings, CatalogSource(settings.catalog, home=settings.home).get())
    log.info("topics ready: %s", ", ".join(topics))


if __name__ == "__main__":
    main()
