"""Every setting Questlog reads, in one place.

Each value comes from an environment variable and falls back to the local default listed in
ARCHITECTURE.md, so the same code runs against the local stack, the compose stack or a real
cluster. Tests build their own ``Settings`` with overrides instead of touching ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Mapping

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> str:
    return str(REPO_ROOT / ".questlog")


def _default_cache() -> str:
    return str(Path.home() / ".cache" / "questlog")


# (attribute, environment variable, default, type). The environment variable names are part of the
# contract with compose/docker-compose.yml: tests check that each service gets exactly these.
_SPEC: tuple[tuple[str, str, object, type], ...] = (
    ("home", "QUESTLOG_HOME", _default_home, str),
    ("cache", "QUESTLOG_CACHE", _default_cache, str),
    ("kafka_bootstrap", "QUESTLOG_KAFKA_BOOTSTRAP", "127.0.0.1:9092", str),
    ("kafka_controller_port", "QUESTLOG_KAFKA_CONTROLLER_PORT", 9093, int),
    ("catalog", "QUESTLOG_CATALOG", lambda: str(REPO_ROOT / "questlog" / "catalog" / "catalog.json"), str),
    ("raw_topic", "QUESTLOG_RAW_TOPIC", "events", str),
    ("dlq_topic", "QUESTLOG_DLQ_TOPIC", "events.dlq", str),
    ("topic_partitions", "QUESTLOG_TOPIC_PARTITIONS", 1, int),
    ("collector_bind", "QUESTLOG_COLLECTOR_BIND", "127.0.0.1:5000", str),
    ("collector_workers", "QUESTLOG_COLLECTOR_WORKERS", 2, int),
    # below Kafka's default message size (1000000), so that one event always fits one message
    ("max_body_bytes", "QUESTLOG_MAX_BODY_BYTES", 900_000, int),
    ("max_batch_events", "QUESTLOG_MAX_BATCH_EVENTS", 1000, int),
    ("produce_timeout_s", "QUESTLOG_PRODUCE_TIMEOUT_S", 10.0, float),
    # a TOML file of `"<write key>" = "<source>"` lines; empty: no keys asked, every event's source is `default`
    ("write_keys", "QUESTLOG_WRITE_KEYS", "", str),
    ("router_id", "QUESTLOG_ROUTER_ID", "questlog-router", str),
    ("router_web_host", "QUESTLOG_ROUTER_WEB_HOST", "127.0.0.1", str),
    ("router_web_port", "QUESTLOG_ROUTER_WEB_PORT", 6066, int),
    # the largest record (key + value) the router writes: below Kafka's message.max.bytes (1048588)
    ("max_record_bytes", "QUESTLOG_MAX_RECORD_BYTES", 1_000_000, int),
    ("hdfs_url", "QUESTLOG_HDFS_URL", "hdfs://127.0.0.1:8020", str),
    ("webhdfs_url", "QUESTLOG_WEBHDFS_URL", "http://127.0.0.1:9870", str),
    ("hdfs_datanode_port", "QUESTLOG_HDFS_DATANODE_PORT", 9866, int),
    ("warehouse_dir", "QUESTLOG_WAREHOUSE_DIR", "/questlog/warehouse", str),
    ("checkpoint_dir", "QUESTLOG_CHECKPOINT_DIR", "/questlog/checkpoints", str),
    ("spark_master", "QUESTLOG_SPARK_MASTER", "local[2]", str),
    ("sink_trigger_s", "QUESTLOG_SINK_TRIGGER_S", 2.0, float),
    # the most Kafka records one sink micro-batch reads (Spark's maxOffsetsPerTrigger)
    ("sink_max_batch_records", "QUESTLOG_SINK_MAX_BATCH_RECORDS", 200_000, int),
    ("dedupe_window_h", "QUESTLOG_DEDUPE_WINDOW_H", 168.0, float),
    # where the sink serves GET /metrics (Prometheus); loopback by default
    ("sink_metrics_bind", "QUESTLOG_SINK_METRICS_BIND", "127.0.0.1:6070", str),
    ("trino_url", "QUESTLOG_TRINO_URL", "http://127.0.0.1:8080", str),
    ("trino_catalog", "QUESTLOG_TRINO_CATALOG", "hive", str),
    ("trino_schema", "QUESTLOG_TRINO_SCHEMA", "events", str),
    ("trino_user", "QUESTLOG_TRINO_USER", "questlog", str),
    # the only Trino user that may create, alter and fill tables (compose/trino/hive-rules.json)
    ("sink_trino_user", "QUESTLOG_SINK_TRINO_USER", "questlog-sink", str),
    # compaction (questlog/compact.py): merged files' size, how long an old generation stays
    # readable after a switch, how long a lock of a killed holder blocks, how often the compactor
    # service looks at today's partitions, and how many small files make that worth it
    ("compact_target_mb", "QUESTLOG_COMPACT_TARGET_MB", 128.0, float),
    ("compact_grace_s", "QUESTLOG_COMPACT_GRACE_S", 600.0, float),
    ("compact_lock_s", "QUESTLOG_COMPACT_LOCK_S", 60.0, float),
    ("compact_interval_s", "QUESTLOG_COMPACT_INTERVAL_S", 300.0, float),
    ("compact_min_files", "QUESTLOG_COMPACT_MIN_FILES", 50, int),
)

ENV_VARS: tuple[str, ...] = tuple(env for _, env, _, _ in _SPEC)


@dataclass(frozen=True)
class Settings:
    home: str
    cache: str
    kafka_bootstrap: str
    kafka_controller_port: int
    catalog: str
    raw_topic: str
    dlq_topic: str
    topic_partitions: int
    collector_bind: str
    collector_workers: int
    max_body_bytes: int
    max_batch_events: int
    produce_timeout_s: float
    write_keys: str
    router_id: str
    router_web_host: str
    router_web_port: int
    max_record_bytes: int
    hdfs_url: str
    webhdfs_url: str
    hdfs_datanode_port: int  # data transfer; its HTTP server listens on this - 2, IPC on this + 1
    warehouse_dir: str
    checkpoint_dir: str
    spark_master: str
    sink_trigger_s: float
    sink_max_batch_records: int
    dedupe_window_h: float
    sink_metrics_bind: str
    trino_url: str
    trino_catalog: str
    trino_schema: str
    trino_user: str
    sink_trino_user: str
    compact_target_mb: float
    compact_grace_s: float
    compact_lock_s: float
    compact_interval_s: float
    compact_min_files: int

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: object) -> "Settings":
        """Read settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, object] = {}
        for attr, env, default, kind in _SPEC:
            if attr in overrides:
                values[attr] = overrides.pop(attr)
                continue
            raw = environ.get(env)
            if raw is None or raw == "":
                values[attr] = default() if callable(default) else default
                continue
            try:
                values[attr] = kind(raw)
            except ValueError:
                raise ValueError(f"{env}={raw!r} is not a valid {kind.__name__}") from None
        if overrides:
            raise TypeError(f"unknown settings: {', '.join(sorted(overrides))}")
        return cls(**values)

    def replace(self, **changes: object) -> "Settings":
        return dataclasses.replace(self, **changes)

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {env: str(getattr(self, attr)) for attr, env, _, _ in _SPEC}

    # Derived values -------------------------------------------------------------------------
    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache)

    @property
    def collector_host(self) -> str:
        return self.collector_bind.rsplit(":", 1)[0]

    @property
    def collector_port(self) -> int:
        return int(self.collector_bind.rsplit(":", 1)[1])

    @property
    def collector_url(self) -> str:
        return f"http://{self.collector_bind}"

    @property
    def sink_metrics_url(self) -> str:
        return f"http://{self.sink_metrics_bind}/metrics"

    @property
    def router_metrics_url(self) -> str:
        return f"http://{self.router_web_host}:{self.router_web_port}/metrics"

    @property
    def kafka_host(self) -> str:
        return self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[0]

    @property
    def kafka_port(self) -> int:
        return int(self.kafka_bootstrap.split(",")[0].rsplit(":", 1)[1])

    @property
    def hdfs_rpc_address(self) -> str:
        return self.hdfs_url.split("://", 1)[1].rstrip("/")

    @property
    def webhdfs_address(self) -> str:
        return self.webhdfs_url.split("://", 1)[1].rstrip("/")

    @property
    def trino_host(self) -> str:
        return self.trino_url.split("://", 1)[1].rsplit(":", 1)[0]

    @property
    def trino_port(self) -> int:
        return int(self.trino_url.rsplit(":", 1)[1].rstrip("/"))

    @property
    def warehouse_url(self) -> str:
        return self.hdfs_url.rstrip("/") + self.warehouse_dir

    @property
    def checkpoint_url(self) -> str:
        return self.hdfs_url.rstrip("/") + self.checkpoint_dir

    def topic_for(self, event_type: str) -> str:
        return f"{self.raw_topic}.{event_type}"
