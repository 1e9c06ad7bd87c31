"""The services of the local stack and of the pipeline, built from Settings.

Each service's config starts from the shared file in `compose/` and only the addresses and
directories of this environment are overridden; the result is written under
``$QUESTLOG_HOME/conf/`` so that what runs can be read.
"""

from __future__ import annotations

import base64
import json
import os
import shutil
import socket
import ssl
import subprocess
import sys
import urllib.request
import uuid
import xml.etree.ElementTree as ET
from collections.abc import Mapping
from pathlib import Path

from ops.stack import artifacts, kafka_security, specs, trino_security
from ops.stack.java import find_java, java_home
from ops.stack.process import Service, ServiceError, port_open
from ops.stack.secret_files import write_private
from questlog.kafka_admin import admin_client
from questlog.settings import REPO_ROOT, Settings, split_address

COMPOSE = REPO_ROOT / "compose"
BIN = Path(sys.executable).parent

# Stop in this order: the pipeline first (it drains into the stack), then the stack.
STOP_ORDER = specs.STOP_ORDER  # what needs others stops first (ops/stack/specs.py)


def _http_json(url: str, timeout: float = 2.0, context: ssl.SSLContext | None = None):
    with urllib.request.urlopen(url, timeout=timeout, context=context) as response:
        return json.loads(response.read())


def trino_tls(settings: Settings) -> ssl.SSLContext | None:
    """What an https Trino's certificate is checked against (QUESTLOG_TRINO_CA, the local CA, or
    the system's); None for http."""
    if settings.trino_scheme != "https":
        return None
    return ssl.create_default_context(cafile=settings.trino_ca_file)


# Config merging ---------------------------------------------------------------------------------


def merge_properties(text: str, overrides: Mapping[str, str]) -> str:
    """A Java .properties text with ``overrides`` replacing (or appended to) its keys."""
    out, seen = [], set()
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip() if "=" in line and not line.lstrip().startswith("#") else None
        if key is not None and key in overrides:
            out.append(f"{key}={overrides[key]}")
            seen.add(key)
        else:
            out.append(line)
    out += [f"{k}={v}" for k, v in overrides.items() if k not in seen]
    return "\n".join(out) + "\n"


def merge_hadoop_xml(text: str, overrides: Mapping[str, str]) -> str:
    root = ET.fromstring(text)
    seen = set()
    for prop in root.findall("property"):
        name, value = prop.findtext("name"), prop.find("value")
        if name is not None and value is not None and name in overrides:
            value.text = overrides[name]
            seen.add(name)
    for key, text in overrides.items():
        if key not in seen:
            prop = ET.SubElement(root, "property")
            ET.SubElement(prop, "name").text = key
            ET.SubElement(prop, "value").text = text
    return '<?xml version="1.0"?>\n' + ET.tostring(root, encoding="unicode") + "\n"


def _write(path: Path, text: str, private: bool = False) -> None:
    """Write ``text`` to ``path``; ``private``: readable by this user only from the first byte (a
    file made by ``write_text`` and then chmod-ed is world-readable in between)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if not private:
        path.write_text(text)
        return
    path.parent.chmod(0o700)
    write_private(path, text)


# JVM metrics ------------------------------------------------------------------------------------
# Kafka and Trino serve their JVM's heap for Prometheus through the JMX exporter's javaagent
# (compose/jmx/jmx-exporter.yaml), the NameNode and DataNode through Hadoop's own /prom, the sink
# in its /metrics. The agents listen next to their service's ports, on its host: Kafka's one above
# its controller port, Trino's one above its HTTP port.

JMX_EXPORTER_CONFIG = COMPOSE / "jmx" / "jmx-exporter.yaml"
# What the agent serves that the Grafana dashboard reads (tests/unit/test_dashboard.py; the
# integration test test_jvm_metrics scrapes them from the running agents).
JMX_AGENT_SERIES = ("jvm_memory_used_bytes", "jvm_memory_max_bytes")


def kafka_jvm_metrics_address(settings: Settings) -> tuple[str, int]:
    return settings.kafka_host, settings.kafka_controller_port + 1


def trino_jvm_metrics_address(settings: Settings) -> tuple[str, int]:
    return settings.trino_host, settings.trino_port + 1


def jmx_agent_option(settings: Settings, address: tuple[str, int]) -> str:
    host, port = address
    return f"-javaagent:{artifacts.jmx_agent(settings.cache_path)}={host}:{port}:{JMX_EXPORTER_CONFIG}"


# Kafka ------------------------------------------------------------------------------------------


# Brokers the local stack starts (compose/kafka/server.properties: one node, one copy of each topic).
LOCAL_KAFKA_BROKERS = 1


def kafka_addresses(settings: Settings) -> dict[str, str]:
    """The broker's addresses and directories (what compose sets for its own brokers too)."""
    host, port, ctl = settings.kafka_host, settings.kafka_port, settings.kafka_controller_port
    return {
        "listeners": f"SASL_PLAINTEXT://{host}:{port},CONTROLLER://{host}:{ctl}",
        "advertised.listeners": f"SASL_PLAINTEXT://{host}:{port}",
        "controller.quorum.voters": f"1@{host}:{ctl}",
        "log.dirs": str(settings.home_path / "kafka" / "data"),
    }


def kafka_config(settings: Settings) -> dict[str, str]:
    """The local broker's server.properties overrides: its addresses, and its authentication and
    authorization (SASL on both listeners, ACLs for every client: ops/stack/kafka_security.py)."""
    return {**kafka_security.broker_properties(settings), **kafka_addresses(settings)}


def kafka(settings: Settings) -> Service:
    java = find_java(17, purpose="Kafka")
    lib = artifacts.kafka(settings.cache_path)
    conf = settings.home_path / "conf" / "kafka" / "server.properties"
    data = settings.home_path / "kafka" / "data"
    jvm = [
        java,
        "-Xms256m",
        "-Xmx512m",
        "-XX:+UseG1GC",
        f"-Dlog4j2.configurationFile={COMPOSE / 'kafka' / 'log4j2.properties'}",
        "-cp",
        f"{lib}/*",
    ]
    metrics = kafka_jvm_metrics_address(settings)

    def setup() -> None:
        kafka_security.ensure_passwords(settings)
        # the broker's own password is in it (its JAAS entry): readable by this user only
        _write(
            conf,
            merge_properties((COMPOSE / "kafka" / "server.properties").read_text(), kafka_config(settings)),
            private=True,
        )
        if not (data / "meta.properties").exists():
            cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
            # `=`: a base64 id may start with "-", which the tool's parser would take for an option
            # (1 fresh stack in 64 failed to start so)
            result = subprocess.run(
                [*jvm, "kafka.tools.StorageTool", "format", f"--cluster-id={cluster_id}", "-c", str(conf)],
                capture_output=True,
                text=True,
            )
            if result.returncode != 0:
                raise ServiceError(
                    f"formatting Kafka's log directory failed:\n{result.stdout[-2000:]}{result.stderr[-2000:]}"
                )

    provisioned: list[bool] = []

    def health() -> bool:
        if not port_open(settings.kafka_host, settings.kafka_port):
            return False  # asking librdkafka earlier only fills the log with refused connections
        admin_client(kafka_security.broker_client(settings)).list_topics(timeout=2)
        if not provisioned:  # every start: the users and ACLs, made by the broker's own identity
            kafka_security.provision(settings)
            provisioned.append(True)
        return True

    # The agent on the broker only: the format tool above runs without it.
    return Service(
        "kafka",
        [java, jmx_agent_option(settings, metrics), *jvm[1:], "kafka.Kafka", str(conf)],
        health,
        setup=setup,
        ports=[
            (settings.kafka_host, settings.kafka_port),
            (settings.kafka_host, settings.kafka_controller_port),
            metrics,
        ],
        url=f"kafka://{settings.kafka_bootstrap}",
    )


# HDFS -------------------------------------------------------------------------------------------


def hadoop_config(settings: Settings) -> dict[str, str]:
    host, _ = split_address(settings.hdfs_rpc_address)
    dn = settings.hdfs_datanode_port
    return {
        "fs.defaultFS": settings.hdfs_url,
        "hadoop.tmp.dir": str(settings.home_path / "hdfs"),
        "dfs.namenode.rpc-address": settings.hdfs_rpc_address,
        "dfs.namenode.rpc-bind-host": host,
        "dfs.namenode.http-address": settings.webhdfs_address,
        "dfs.namenode.http-bind-host": split_address(settings.webhdfs_address)[0],
        "dfs.datanode.address": f"{host}:{dn}",
        "dfs.datanode.http.address": f"{host}:{dn - 2}",
        "dfs.datanode.ipc.address": f"{host}:{dn + 1}",
        "dfs.datanode.hostname": host,
    }


def _hdfs_daemon(settings: Settings, role: str) -> tuple[list[str], Path]:
    java = find_java(17, purpose="HDFS")
    root = artifacts.hadoop(settings.cache_path)
    conf = settings.home_path / "conf" / "hadoop"
    heap = "-Xmx384m" if role == "namenode" else "-Xmx256m"
    main = {
        "namenode": "org.apache.hadoop.hdfs.server.namenode.NameNode",
        "datanode": "org.apache.hadoop.hdfs.server.datanode.DataNode",
    }[role]
    argv = [
        java,
        heap,
        "-XX:+UseG1GC",
        f"-Dhadoop.log.dir={settings.home_path / 'logs'}",
        f"-Dlog4j.configuration=file:{conf / 'log4j.properties'}",
        "-cp",
        f"{conf}:{root / 'webroot'}:{root / 'lib'}/*",
        main,
    ]
    return argv, conf


def _write_hadoop_conf(settings: Settings, conf: Path) -> None:
    overrides = hadoop_config(settings)
    for name in ("core-site.xml", "hdfs-site.xml"):
        _write(conf / name, merge_hadoop_xml((COMPOSE / "hadoop" / name).read_text(), overrides))
    _write(conf / "log4j.properties", (COMPOSE / "hadoop" / "log4j.properties").read_text())


def _namenode_state(settings: Settings) -> dict:
    beans = _http_json(f"{settings.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=FSNamesystemState")
    return beans["beans"][0]


def namenode(settings: Settings) -> Service:
    argv, conf = _hdfs_daemon(settings, "namenode")

    def setup() -> None:
        _write_hadoop_conf(settings, conf)
        if not (settings.home_path / "hdfs" / "dfs" / "name" / "current" / "VERSION").exists():
            result = subprocess.run([*argv, "-format", "-nonInteractive"], capture_output=True, text=True)
            if result.returncode != 0:
                raise ServiceError(f"formatting the NameNode failed:\n{(result.stdout + result.stderr)[-3000:]}")

    def health() -> bool:
        # Serving. After a restart it stays in safe mode until the DataNode reports its blocks;
        # the DataNode's check waits for that.
        return _namenode_state(settings)["FSState"] in ("Operational", "safeMode")

    return Service(
        "namenode",
        argv,
        health,
        setup=setup,
        ports=[split_address(settings.hdfs_rpc_address), split_address(settings.webhdfs_address)],
        url=settings.webhdfs_url,
    )


def datanode(settings: Settings) -> Service:
    argv, conf = _hdfs_daemon(settings, "datanode")
    host, _ = split_address(settings.hdfs_rpc_address)
    dn = settings.hdfs_datanode_port

    def health() -> bool:
        # Live, and the NameNode has left safe mode: HDFS takes writes.
        state = _namenode_state(settings)
        info = _http_json(f"{settings.webhdfs_url}/jmx?qry=Hadoop:service=NameNode,name=NameNodeInfo")
        return state["NumLiveDataNodes"] >= 1 and info["beans"][0]["Safemode"] == ""

    return Service(
        "datanode",
        argv,
        health,
        setup=lambda: _write_hadoop_conf(settings, conf),
        ports=[(host, dn), (host, dn - 2), (host, dn + 1)],
    )


# Trino ------------------------------------------------------------------------------------------


def jvm_config(path: Path) -> list[str]:
    return [
        line.strip() for line in path.read_text().splitlines() if line.strip() and not line.lstrip().startswith("#")
    ]


def trino_config(settings: Settings) -> dict[str, str]:
    """config.properties keys of this environment: the port, the one address the server binds
    (airlift's node.bind-ip, by default every interface), and, for an https QUESTLOG_TRINO_URL (the
    default), HTTPS only with password authentication (ops/stack/trino_security.py)."""
    host, port = settings.trino_host, settings.trino_port
    if settings.trino_scheme != "https":
        return {
            "http-server.http.port": str(port),
            "discovery.uri": f"http://{host}:{port}",
            "node.bind-ip": socket.gethostbyname(host),
        }
    etc = settings.home_path / "conf" / "trino"
    ca, server = trino_security.secrets_dir(settings) / "ca.pem", trino_security.secrets_dir(settings) / "server.pem"
    return {
        "http-server.http.enabled": "false",
        "http-server.https.enabled": "true",
        "http-server.https.port": str(port),
        "http-server.https.keystore.path": str(server),
        "http-server.authentication.type": "PASSWORD",
        "password-authenticator.config-files": str(etc / "password-authenticator.properties"),
        # the secret in the process's environment (read from its 0600 file as Trino starts)
        "internal-communication.shared-secret": "${ENV:QUESTLOG_TRINO_SHARED_SECRET}",
        "internal-communication.https.required": "true",
        "internal-communication.https.truststore.path": str(ca),
        "discovery.uri": f"https://{host}:{port}",
        "node.bind-ip": socket.gethostbyname(host),
    }


def trino_catalog_config(settings: Settings) -> dict[str, str]:
    """Catalog keys of this environment: where the access rules are (in compose, /etc/trino), and
    the Iceberg catalog's name and database (its password comes from the environment)."""
    return {
        "security.config-file": str(COMPOSE / "trino" / "iceberg-rules.json"),
        "iceberg.jdbc-catalog.catalog-name": settings.trino_catalog,
        "iceberg.jdbc-catalog.connection-url": settings.catalog_jdbc_url,
        "iceberg.jdbc-catalog.connection-user": settings.catalog_db_user,
    }


def trino(settings: Settings) -> Service:
    java = find_java(24, purpose="Trino 476")
    server = artifacts.trino_server(settings.cache_path)
    etc = settings.home_path / "conf" / "trino"
    data = settings.home_path / "trino"

    def setup() -> None:
        if settings.trino_scheme == "https":  # the CA (once), its server certificate, the passwords
            trino_security.ensure_certificates(settings)
            trino_security.ensure_secret(settings, "shared-secret")
            trino_security.write_password_db(settings, etc / "password.db")
            _write(
                etc / "password-authenticator.properties",
                f"password-authenticator.name=file\nfile.password-file={etc / 'password.db'}\n",
            )
        _write(
            etc / "config.properties",
            merge_properties((COMPOSE / "trino" / "config.properties").read_text(), trino_config(settings)),
        )
        overrides = trino_catalog_config(settings)
        for catalog in (COMPOSE / "trino" / "catalog").glob("*.properties"):
            text = catalog.read_text()
            has = {
                line.split("=", 1)[0].strip()
                for line in text.splitlines()
                if "=" in line and not line.lstrip().startswith("#")
            }
            # named after the catalog: `<QUESTLOG_TRINO_CATALOG>.events.<table>`, as Spark names it
            name = f"{settings.trino_catalog}.properties" if catalog.name == "iceberg.properties" else catalog.name
            _write(etc / "catalog" / name, merge_properties(text, {k: v for k, v in overrides.items() if k in has}))
        data.mkdir(parents=True, exist_ok=True)

    metrics = trino_jvm_metrics_address(settings)
    argv = [
        java,
        *jvm_config(COMPOSE / "trino" / "jvm.config"),
        jmx_agent_option(settings, metrics),
        f"-Dconfig={etc / 'config.properties'}",
        f"-Dlog.levels-file={COMPOSE / 'trino' / 'log.properties'}",
        "-Dnode.environment=questlog",
        "-Dnode.id=questlog-local",
        f"-Dnode.internal-address={settings.trino_host}",
        f"-Dnode.data-dir={data}",
        f"-Dplugin.dir={server / 'plugin'}",
        f"-Dhttp-server.log.path={settings.home_path / 'logs' / 'trino-http-request.log'}",
        f"-Dcatalog.config-dir={etc / 'catalog'}",
        "-cp",
        f"{server / 'lib'}/*",
        "io.trino.server.TrinoServer",
    ]

    def health() -> bool:
        return _http_json(f"{settings.trino_url}/v1/info", context=trino_tls(settings)).get("starting") is False

    return Service(
        "trino",
        argv,
        health,
        setup=setup,
        env={"QUESTLOG_HDFS_URL": settings.hdfs_url},
        # read when the process starts (PostgreSQL's set-up made it), into its environment: never
        # on the command line
        secret_env=lambda: {
            "QUESTLOG_CATALOG_DB_PASSWORD": settings.catalog_db_password(),
            **(
                {"QUESTLOG_TRINO_SHARED_SECRET": trino_security.ensure_secret(settings, "shared-secret")}
                if settings.trino_scheme == "https"
                else {}
            ),
        },
        cwd=data,
        ports=[(settings.trino_host, settings.trino_port), metrics],
        # 60-110 s on this 2-core machine when it is quiet; over 180 s four times at load averages of
        # 37-50 (every test of that run then failed): the sink's budget, not a failed start
        start_timeout_s=300,
        url=settings.trino_url,
    )


# The pipeline -----------------------------------------------------------------------------------


def _app_env(settings: Settings, kafka_user: str = "") -> dict[str, str]:
    """A stage's environment: every setting, with ``kafka_user`` as its Kafka identity (its
    password in its own file under $QUESTLOG_HOME/secrets/kafka/; the stage reads it)."""
    password = str(kafka_security.secrets_dir(settings) / kafka_user) if kafka_user else ""
    own = settings.replace(kafka_user=kafka_user, kafka_password_file=password, kafka_password_env="")
    return {**own.to_env(), "PYTHONUNBUFFERED": "1", "PYTHONPATH": str(REPO_ROOT)}


# Threads per collector worker (see collector()).
COLLECTOR_THREADS = 72


def collector(settings: Settings) -> Service:
    metrics_dir = settings.home_path / "run" / "collector-metrics"

    def setup() -> None:  # counters start at zero with each run, as a process's would
        shutil.rmtree(metrics_dir, ignore_errors=True)
        metrics_dir.mkdir(parents=True)

    # Granian's WSGI server, not gunicorn's gthread: 1.7x the requests per second at -c 16 (the
    # collector's deep dive, docs/collector.md). Each worker waits for Kafka's acks on its threads.
    # A request holds a thread while its body arrives, so a slow sender holds one: 72 threads a
    # worker (started only when needed) leave 8 for traffic and /healthz with 64 slow senders on
    # one worker. Headers are read without a thread, and a client that has not sent them all in
    # 10 s is cut off.
    argv = [
        str(BIN / "granian"),
        "--interface",
        "wsgi",
        "--host",
        settings.collector_host,
        "--port",
        str(settings.collector_port),
        "--workers",
        str(settings.collector_workers),
        "--blocking-threads",
        str(COLLECTOR_THREADS),
        "--http1-header-read-timeout",
        "10000",
        "--http",
        "1",
        "--no-ws",
        "--workers-kill-timeout",
        "20",
        "--factory",
        "producer:create_app",
    ]

    def health() -> bool:
        return _http_json(f"{settings.collector_url}/healthz")["status"] == "ok"

    return Service(
        "collector",
        argv,
        health,
        env={
            **_app_env(settings, kafka_security.STAGE_USERS["collector"]),
            "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir),
        },
        cwd=REPO_ROOT,
        setup=setup,
        ports=[(settings.collector_host, settings.collector_port)],
        url=settings.collector_url,
    )


def router(settings: Settings) -> Service:
    # Exactly the documented command: the web address and everything else come from the settings.
    argv = [str(BIN / "faust"), "-A", "faust_app.app", "worker", "-l", "info"]

    def health() -> bool:
        # Ready when its consumer group is stable and holds a partition of the raw topic.
        admin = admin_client(settings.kafka_client())
        group = admin.describe_consumer_groups([settings.router_id])[settings.router_id].result(timeout=5)
        return group.state.name == "STABLE" and any(
            tp.topic == settings.raw_topic for m in group.members for tp in m.assignment.topic_partitions
        )

    return Service(
        "router",
        argv,
        health,
        env=_app_env(settings, kafka_security.STAGE_USERS["router"]),
        cwd=REPO_ROOT,
        ports=[(settings.router_web_host, settings.router_web_port)],
        start_timeout_s=120,
        url=f"http://{settings.router_web_host}:{settings.router_web_port}",
    )


def sink(settings: Settings) -> Service:

    java = find_java(17, 21, purpose="Spark")
    ready = settings.home_path / "run" / "sink.ready"

    def setup() -> None:
        ready.unlink(missing_ok=True)

    # Spark's tuning comes from compose/spark/spark-defaults.conf unless SPARK_CONF_DIR names another.
    env = {
        **_app_env(settings, kafka_security.STAGE_USERS["sink"]),
        "JAVA_HOME": java_home(java),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_CONF_DIR": os.environ.get("SPARK_CONF_DIR") or str(COMPOSE / "spark"),
    }
    return Service(
        "sink",
        [sys.executable, "-m", "spark_sink.job"],
        ready.exists,
        env=env,
        cwd=REPO_ROOT,
        setup=setup,
        start_timeout_s=300,
    )


def compactor(settings: Settings) -> Service:
    """Compaction while the pipeline runs (compactor/compact.py `loop`): today's partitions when
    enough small files gathered, each closed day once after midnight UTC."""
    ready = settings.home_path / "run" / "compactor.ready"

    def setup() -> None:
        ready.unlink(missing_ok=True)

    return Service(
        "compactor",
        [sys.executable, "-m", "compactor.compact"],
        ready.exists,
        # its Kafka user may only describe (the erasure waits for the router's offsets)
        env=_app_env(settings, kafka_security.STAGE_USERS["compactor"]),
        cwd=REPO_ROOT,
        setup=setup,
    )


def build(name: str, settings: Settings) -> Service:
    """The Service (command, env, health check) of the service ``name`` of ops.stack.specs."""
    if name == "postgres":
        from ops.stack.postgres import postgres

        return postgres(settings)
    return globals()[specs.BY_NAME[name].builder](settings)


def waves(group: str, settings: Settings) -> list[list[Service]]:
    """The services of ``group`` ("stack" or "pipeline") in the waves they start in (specs.waves)."""
    return [[build(spec.name, settings) for spec in wave] for wave in specs.waves(group)]
