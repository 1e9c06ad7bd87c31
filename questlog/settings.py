"""Every setting Questlog reads, in one place.

Each value comes from an environment variable and falls back to the local default listed in
docs/configuration.md, so the same code runs against the local stack, the compose stack or a real
cluster. Tests build their own ``Settings`` with overrides instead of touching ``os.environ``.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, unquote, urlsplit

REPO_ROOT = Path(__file__).resolve().parent.parent


def _default_home() -> str:
    return str(REPO_ROOT / ".questlog")


def _default_cache() -> str:
    return str(Path.home() / ".cache" / "questlog")


# Each field names its environment variable; the variable names are part of the contract with
# compose/docker-compose.yml: tests check that each service gets exactly these.


def setting(env: str, default: object, *, port: bool = False) -> Any:
    """A field of Settings read from ``env``; ``default`` is a value or a function giving one.
    ``port``: the field holds a port a service listens on (a number, ``host:port`` or a URL), which
    `Settings.shifted` moves for a test, fault or bench stack beside the local one."""
    metadata = {"env": env, "port": port}
    if callable(default):
        return field(default_factory=default, metadata=metadata)
    return field(default=default, metadata=metadata)


@dataclass(frozen=True)
class Settings:
    home: str = setting("QUESTLOG_HOME", _default_home)
    cache: str = setting("QUESTLOG_CACHE", _default_cache)
    kafka_bootstrap: str = setting("QUESTLOG_KAFKA_BOOTSTRAP", "127.0.0.1:9092", port=True)
    kafka_controller_port: int = setting("QUESTLOG_KAFKA_CONTROLLER_PORT", 9093, port=True)
    catalog: str = setting("QUESTLOG_CATALOG", lambda: str(REPO_ROOT / "questlog" / "catalog" / "catalog.json"))
    raw_topic: str = setting("QUESTLOG_RAW_TOPIC", "events")
    dlq_topic: str = setting("QUESTLOG_DLQ_TOPIC", "events.dlq")
    topic_partitions: int = setting("QUESTLOG_TOPIC_PARTITIONS", 1)
    # Bytes each partition of a pipeline topic keeps at most (Kafka's retention.bytes): a flood
    # fills no disk; the oldest records go first, read or not (questlog status shows the lag).
    topic_retention_bytes: int = setting("QUESTLOG_TOPIC_RETENTION_BYTES", 4 * 2**30)
    # Copies of each partition of every topic Questlog creates (Kafka's replication factor); 0: as
    # many as the brokers up allow, at most 3 (one broker: 1; three or more: 3). And how many of
    # them must have a record before Kafka acknowledges it (min.insync.replicas; producers use
    # acks=all); 0: one less than the replication, at least 1 (2 of 3).
    topic_replication: int = setting("QUESTLOG_TOPIC_REPLICATION", 0)
    min_insync_replicas: int = setting("QUESTLOG_MIN_INSYNC_REPLICAS", 0)
    collector_bind: str = setting("QUESTLOG_COLLECTOR_BIND", "127.0.0.1:5000", port=True)
    collector_workers: int = setting("QUESTLOG_COLLECTOR_WORKERS", 2)
    # below Kafka's default message size (1000000), so that one event always fits one message
    max_body_bytes: int = setting("QUESTLOG_MAX_BODY_BYTES", 900_000)
    max_batch_events: int = setting("QUESTLOG_MAX_BATCH_EVENTS", 1000)
    produce_timeout_s: float = setting("QUESTLOG_PRODUCE_TIMEOUT_S", 10.0)
    # a TOML file of `"<write key>" = "<source>"` lines; empty: no keys asked, every event's source is `default`
    write_keys: str = setting("QUESTLOG_WRITE_KEYS", "")
    router_id: str = setting("QUESTLOG_ROUTER_ID", "questlog-router")
    router_web_host: str = setting("QUESTLOG_ROUTER_WEB_HOST", "127.0.0.1")
    router_web_port: int = setting("QUESTLOG_ROUTER_WEB_PORT", 6066, port=True)
    # the largest record (key + value) the router writes: below Kafka's message.max.bytes (1048588)
    max_record_bytes: int = setting("QUESTLOG_MAX_RECORD_BYTES", 1_000_000)
    # player sessions in the router (faust_app.sessions): 1 on, 0 off (no activity records, no agent)
    sessions: int = setting("QUESTLOG_SESSIONS", 1)
    # a player's session ends after this much event time without an event
    session_gap_s: float = setting("QUESTLOG_SESSION_GAP_S", 1800.0)
    # how far behind the latest event time of its partition an event may come and still be in time
    session_lateness_s: float = setting("QUESTLOG_SESSION_LATENESS_S", 120.0)
    # the router's idle ticks: an activity partition without events this long closes by the clock
    session_tick_s: float = setting("QUESTLOG_SESSION_TICK_S", 10.0)
    # a client_ts at most this much before received_at (and not after it) is the event's time
    session_client_ts_max_age_s: float = setting("QUESTLOG_SESSION_CLIENT_TS_MAX_AGE_S", 86400.0)
    hdfs_url: str = setting("QUESTLOG_HDFS_URL", "hdfs://127.0.0.1:8020", port=True)
    webhdfs_url: str = setting("QUESTLOG_WEBHDFS_URL", "http://127.0.0.1:9870", port=True)
    # data transfer; the DataNode's HTTP server listens on this - 2, its IPC on this + 1
    hdfs_datanode_port: int = setting("QUESTLOG_HDFS_DATANODE_PORT", 9866, port=True)
    warehouse_dir: str = setting("QUESTLOG_WAREHOUSE_DIR", "/questlog/warehouse")
    checkpoint_dir: str = setting("QUESTLOG_CHECKPOINT_DIR", "/questlog/checkpoints")
    spark_master: str = setting("QUESTLOG_SPARK_MASTER", "local[2]")
    sink_trigger_s: float = setting("QUESTLOG_SINK_TRIGGER_S", 2.0)
    # the most Kafka records one sink micro-batch reads (Spark's maxOffsetsPerTrigger)
    sink_max_batch_records: int = setting("QUESTLOG_SINK_MAX_BATCH_RECORDS", 500_000)
    dedupe_window_h: float = setting("QUESTLOG_DEDUPE_WINDOW_H", 168.0)
    # where the sink serves GET /metrics (Prometheus); loopback by default
    sink_metrics_bind: str = setting("QUESTLOG_SINK_METRICS_BIND", "127.0.0.1:6070", port=True)
    # http(s)://[user[:password]@]host[:port]; with a password, Trino's password authentication (https only)
    trino_url: str = setting("QUESTLOG_TRINO_URL", "http://127.0.0.1:8080", port=True)
    # the Iceberg catalog: Trino's catalog of that name, Spark's catalog of the same name, and the
    # catalog_name both keep their tables under in the catalog database
    trino_catalog: str = setting("QUESTLOG_TRINO_CATALOG", "iceberg")
    trino_schema: str = setting("QUESTLOG_TRINO_SCHEMA", "events")
    trino_user: str = setting("QUESTLOG_TRINO_USER", "questlog")
    # the only Trino user that may change tables: the compactor's optimize, snapshot expiry and
    # orphan removal (compose/trino/iceberg-rules.json); the sink writes through Spark, not Trino
    compact_trino_user: str = setting("QUESTLOG_COMPACT_TRINO_USER", "questlog-compactor")
    # the Iceberg JDBC catalog's database: postgresql://user@host:port/database; its password is the
    # first line of QUESTLOG_CATALOG_DB_PASSWORD_FILE (default: $QUESTLOG_HOME/postgres/password,
    # made by the local stack)
    catalog_db_url: str = setting("QUESTLOG_CATALOG_DB_URL", "postgresql://questlog@127.0.0.1:5433/questlog", port=True)
    catalog_db_password_file: str = setting("QUESTLOG_CATALOG_DB_PASSWORD_FILE", "")
    # the password itself, for where secrets come as variables (compose); wins over the file
    catalog_db_password_env: str = setting("QUESTLOG_CATALOG_DB_PASSWORD", "")
    # compaction (compactor/compact.py): merged files' size, how long a replaced snapshot (and its
    # files) stays readable, how often the compactor service looks at today's partitions, how many
    # small files make that worth it, and how old a file no snapshot names must be to be deleted
    compact_target_mb: float = setting("QUESTLOG_COMPACT_TARGET_MB", 128.0)
    compact_grace_s: float = setting("QUESTLOG_COMPACT_GRACE_S", 600.0)
    compact_interval_s: float = setting("QUESTLOG_COMPACT_INTERVAL_S", 300.0)
    compact_min_files: int = setting("QUESTLOG_COMPACT_MIN_FILES", 50)
    orphan_age_s: float = setting("QUESTLOG_ORPHAN_AGE_S", 86400.0)
    # Players' data (questlog/privacy.py, docs/privacy.md): the hashing key's file (empty:
    # $QUESTLOG_HOME/privacy/secret, made on first use); how long after a forget request its rows
    # leave the tables (the compactor looks this often) and its files leave HDFS (snapshots of the
    # rows' files older than this are expired); how long a request waits for the router to have
    # seen it before the compactor makes sure nothing routed before it is still on its way
    privacy_secret_file: str = setting("QUESTLOG_PRIVACY_SECRET_FILE", "")
    forget_interval_s: float = setting("QUESTLOG_FORGET_INTERVAL_S", 60.0)
    forget_grace_s: float = setting("QUESTLOG_FORGET_GRACE_S", 600.0)
    forget_settle_s: float = setting("QUESTLOG_FORGET_SETTLE_S", 5.0)
    # retention: Kafka topics' time bound (their size bound is QUESTLOG_TOPIC_RETENTION_BYTES); the
    # dead letters' and the sessions' tables (event types have theirs in the catalog:
    # retention_days); 0 keeps forever
    kafka_retention_h: float = setting("QUESTLOG_KAFKA_RETENTION_H", 168.0)
    dead_letters_retention_days: int = setting("QUESTLOG_DEAD_LETTERS_RETENTION_DAYS", 30)
    sessions_retention_days: int = setting("QUESTLOG_SESSIONS_RETENTION_DAYS", 0)

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None, **overrides: Any) -> Settings:
        """Read settings from ``environ`` (default ``os.environ``); keyword overrides win."""
        environ = os.environ if environ is None else environ
        values: dict[str, Any] = {}
        unknown = set(overrides) - {f.name for f in _FIELDS}
        if unknown:
            raise TypeError(f"unknown settings: {', '.join(sorted(unknown))}")
        for f in _FIELDS:
            raw = environ.get(f.metadata["env"])
            if f.name in overrides or raw is None or raw == "":
                continue  # an override, or the field's default
            kind = _TYPES[str(f.type)]
            try:
                values[f.name] = kind(raw)
            except ValueError:
                raise ValueError(f"{f.metadata['env']}={raw!r} is not a valid {kind.__name__}") from None
        return cls(**values, **overrides)

    def replace(self, **changes: Any) -> Settings:
        return dataclasses.replace(self, **changes)

    def shifted(self, offset: int, home: str | Path, **changes: Any) -> Settings:
        """These settings for a stack beside this one: every port setting (``port=True``) moved by
        ``offset``, state in ``home`` with its own deployed catalog (``home/catalog.json``), then
        ``changes``. The one way the test, fault and bench stacks get their addresses."""
        moved = {f.name: _shift(getattr(self, f.name), offset) for f in _FIELDS if f.metadata["port"]}
        for port in [p for value in moved.values() for p in _ports(value)]:
            if not 0 < port < 32768:  # Linux hands out 32768 and up to outgoing connections
                raise ValueError(f"a shift of {offset} puts a port at {port}, outside 1-32767")
        return dataclasses.replace(
            self, **{"home": str(home), "catalog": str(Path(home) / "catalog.json"), **moved, **changes}
        )

    def to_env(self) -> dict[str, str]:
        """The environment variables that reproduce these settings in a child process."""
        return {f.metadata["env"]: str(getattr(self, f.name)) for f in _FIELDS}

    # Derived values -------------------------------------------------------------------------
    @property
    def activity_topic(self) -> str:
        """The router's internal topic of player activity, read by agent ``sessions``."""
        return f"{self.router_id}-activity"

    @property
    def sessions_changelog_topic(self) -> str:
        """The changelog of agent ``sessions``' Faust table (Faust's name for it)."""
        return f"{self.router_id}-sessions-changelog"

    @property
    def sessions_topic(self) -> str:
        """The topic of closed sessions (only agent ``sessions`` writes it; the sink lands it)."""
        return f"{self.raw_topic}.sessions"

    @property
    def home_path(self) -> Path:
        return Path(self.home)

    @property
    def cache_path(self) -> Path:
        return Path(self.cache)

    @property
    def collector_host(self) -> str:
        return split_address(self.collector_bind)[0]

    @property
    def collector_port(self) -> int:
        return split_address(self.collector_bind)[1]

    @property
    def collector_url(self) -> str:
        return f"http://{join_address(self.collector_host, self.collector_port)}"

    @property
    def sink_metrics_url(self) -> str:
        return f"http://{join_address(*split_address(self.sink_metrics_bind))}/metrics"

    @property
    def router_metrics_url(self) -> str:
        return f"http://{join_address(self.router_web_host, self.router_web_port)}/metrics"

    @property
    def kafka_host(self) -> str:
        """The first bootstrap server's host (the local stack's broker)."""
        return split_address(self.kafka_bootstrap.split(",")[0], 9092)[0]

    @property
    def kafka_port(self) -> int:
        return split_address(self.kafka_bootstrap.split(",")[0], 9092)[1]

    @property
    def hdfs_rpc_address(self) -> str:
        url = _url(self.hdfs_url, "QUESTLOG_HDFS_URL", ("hdfs",))
        return join_address(url.hostname or "", url.port or _DEFAULT_PORTS[url.scheme])

    @property
    def webhdfs_address(self) -> str:
        url = _url(self.webhdfs_url, "QUESTLOG_WEBHDFS_URL")
        return join_address(url.hostname or "", url.port or _DEFAULT_PORTS[url.scheme])

    @property
    def trino_scheme(self) -> str:
        return _url(self.trino_url, "QUESTLOG_TRINO_URL").scheme

    @property
    def trino_host(self) -> str:
        return _url(self.trino_url, "QUESTLOG_TRINO_URL").hostname or ""

    @property
    def trino_port(self) -> int:
        url = _url(self.trino_url, "QUESTLOG_TRINO_URL")
        return url.port or _DEFAULT_PORTS[url.scheme]

    @property
    def trino_credentials(self) -> tuple[str, str | None] | None:
        """(user, password) given in QUESTLOG_TRINO_URL, percent-decoded; None without a user."""
        url = _url(self.trino_url, "QUESTLOG_TRINO_URL")
        if not url.username:
            return None
        return unquote(url.username), unquote(url.password) if url.password is not None else None

    @property
    def catalog_db(self) -> SplitResult:
        url = urlsplit(self.catalog_db_url.strip())
        try:
            _ = url.port
        except ValueError:
            raise ValueError(f"QUESTLOG_CATALOG_DB_URL={self.catalog_db_url!r}: the port is not a number") from None
        if url.scheme != "postgresql" or not url.hostname or not url.username or not url.path.strip("/"):
            raise ValueError(
                f"QUESTLOG_CATALOG_DB_URL={self.catalog_db_url!r} is not a URL like postgresql://user@host:port/database"
            )
        return url

    @property
    def catalog_db_host(self) -> str:
        return self.catalog_db.hostname or ""

    @property
    def catalog_db_port(self) -> int:
        return self.catalog_db.port or 5432

    @property
    def catalog_db_user(self) -> str:
        return unquote(self.catalog_db.username or "")

    @property
    def catalog_db_name(self) -> str:
        return self.catalog_db.path.strip("/")

    @property
    def catalog_jdbc_url(self) -> str:
        """The catalog database as a JDBC URL (Spark's and Trino's Iceberg JDBC catalog)."""
        return f"jdbc:postgresql://{join_address(self.catalog_db_host, self.catalog_db_port)}/{self.catalog_db_name}"

    @property
    def catalog_db_password_path(self) -> Path:
        return Path(self.catalog_db_password_file or Path(self.home) / "postgres" / "password")

    def catalog_db_password(self) -> str:
        """The catalog database's password, read from its file (never from the command line)."""
        if self.catalog_db_password_env:
            return self.catalog_db_password_env
        path = self.catalog_db_password_path
        try:
            return path.read_text().splitlines()[0]
        except (OSError, IndexError):
            raise RuntimeError(
                f"no password for the catalog database in {path} (QUESTLOG_CATALOG_DB_PASSWORD_FILE): "
                "the local stack writes it when it sets PostgreSQL up (`questlog run`)"
            ) from None

    @property
    def warehouse_url(self) -> str:
        return self.hdfs_url.rstrip("/") + self.warehouse_dir

    @property
    def checkpoint_url(self) -> str:
        return self.hdfs_url.rstrip("/") + self.checkpoint_dir

    @property
    def sink_checkpoint_dir(self) -> str:
        """The sink's Spark checkpoint (offsets and commits) on HDFS. `sink-v2`: the query has no
        Spark state since the dedupe index moved to the driver (`spark_sink.dedupe`); a v1
        checkpoint (`sink`, with the old state operator) cannot run the new query, so the sink
        starts v2 where v1 had committed."""
        return f"{self.checkpoint_dir.rstrip('/')}/sink-v2"

    @property
    def sink_checkpoint_v1_dir(self) -> str:
        return f"{self.checkpoint_dir.rstrip('/')}/sink"

    @property
    def dedupe_index_dir(self) -> Path:
        """The sink's dedupe index (RocksDB, on the driver's disk): keep it with the checkpoint."""
        return Path(self.home) / "sink" / "dedupe-index"

    def topic_for(self, event_type: str) -> str:
        from questlog.catalog import typed_topic

        return typed_topic(self.raw_topic, event_type)


_FIELDS = dataclasses.fields(Settings)
_TYPES = {"str": str, "int": int, "float": float}
ENV_VARS: tuple[str, ...] = tuple(f.metadata["env"] for f in _FIELDS)
_DEFAULT_PORTS = {"http": 80, "https": 443, "hdfs": 8020}


def split_address(address: str, default_port: int | None = None) -> tuple[str, int]:
    """The host and port of ``host:port`` (``[::1]:9092`` for IPv6), parsed by urllib.parse."""
    try:
        parts = urlsplit("//" + address.strip())
        host, port = parts.hostname, parts.port
    except ValueError as exc:
        raise ValueError(f"{address!r} is not a host:port address: {exc}") from None
    port = port if port is not None else default_port
    if not host or port is None or parts.path or parts.username:
        raise ValueError(f"{address!r} is not a host:port address")
    return host, port


def join_address(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def _url(text: str, name: str, schemes: tuple[str, ...] = ("http", "https")) -> SplitResult:
    """``text`` split by urllib.parse, or a ValueError naming the setting."""
    url = urlsplit(text.strip())
    try:
        _ = url.port  # a port that is not a number raises here
    except ValueError:
        raise ValueError(f"{name}={text!r}: the port is not a number") from None
    if url.scheme not in schemes or not url.hostname:
        raise ValueError(f"{name}={text!r} is not a URL like {'|'.join(schemes)}://host[:port]")
    return url


def _shift(value: int | str, offset: int) -> int | str:
    """A port, ``host:port`` (or several, comma-separated) or URL with a port, moved by ``offset``."""
    if isinstance(value, int):
        return value + offset
    if "://" in value:
        parts = urlsplit(value)
        user, _, address = parts.netloc.rpartition("@")
        moved = _shift(address, offset)
        return parts._replace(netloc=f"{user}@{moved}" if user else str(moved)).geturl()
    if "," in value:
        return ",".join(str(_shift(one, offset)) for one in value.split(","))
    host, port = split_address(value)
    return join_address(host, port + offset)


def _ports(value: int | str) -> list[int]:
    if isinstance(value, int):
        return [value]
    if "://" in value:
        return _ports(urlsplit(value).netloc.rpartition("@")[2])
    return [split_address(one)[1] for one in value.split(",")]


def harness_variable(name: str, default: str) -> str:
    """A variable of the test, fault or bench harness (QUESTLOG_TEST_*, QUESTLOG_BENCH_*), not of
    the pipeline: read here, beside the settings, so that no module reads the environment itself."""
    if name not in HARNESS_VARS:
        raise KeyError(f"{name} is not a harness variable ({', '.join(HARNESS_VARS)})")
    return os.environ.get(name) or default


# What the harnesses read (tests/conftest.py, benchmarks/stack.py): where their stack lives and how
# far its ports are shifted from the local defaults, so that two runs can share a machine.
HARNESS_VARS = (
    "QUESTLOG_TEST_PORT_OFFSET",
    "QUESTLOG_TEST_HOME",
    "QUESTLOG_BENCH_PORT_OFFSET",
    "QUESTLOG_BENCH_HOME",
)
