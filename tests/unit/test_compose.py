"""The docker compose stack (compose/docker-compose.yml, compose/Dockerfile), checked without Docker.

No Docker engine runs where these tests run, so they hold the compose files to what can be known
from the files alone: a valid Compose file with every service the pipeline needs, health checks and
readiness conditions; the local stack's versions, config files, QUESTLOG_* variables and ports; and
overrides of the shared configs limited to what differs per environment (docs/compose.md).
"""

from __future__ import annotations

import ast
import configparser
import copy
import fnmatch
import importlib
import importlib.util
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path
from types import SimpleNamespace

import jsonschema
import pytest
import yaml

import spark_sink.connector
import spark_sink.job
from ops.stack import artifacts, postgres, services, specs
from questlog.settings import ENV_VARS, REPO_ROOT, Settings

COMPOSE_DIR = REPO_ROOT / "compose"
COMPOSE_FILE = COMPOSE_DIR / "docker-compose.yml"
DOCKERFILE = COMPOSE_DIR / "Dockerfile"

PIPELINE = (*specs.NAMES, "loadgen")  # every service of ops/stack/specs.py, and the demo load
ONE_SHOT = ("hdfs-init", "jmx-agent", "topics", "loadgen")  # run to completion; the rest run until stopped
APPS = ("topics", "collector", "router", "sink", "compactor", "loadgen")  # built from compose/Dockerfile
IMAGES = [
    ("kafka", "apache/kafka", artifacts.KAFKA_VERSION),
    ("hdfs-init", "apache/hadoop", artifacts.HADOOP_VERSION),
    ("namenode", "apache/hadoop", artifacts.HADOOP_VERSION),
    ("datanode", "apache/hadoop", artifacts.HADOOP_VERSION),
    ("trino", "trinodb/trino", artifacts.TRINO_VERSION),
    # the Debian major the local stack runs (ops.stack.postgres.MAJOR)
    ("postgres", "postgres", f"{postgres.MAJOR}."),
]
LOOPBACK = ("127.0.0.1", "localhost")
# The `monitoring` profile's UIs on their usual ports (tests/unit/test_dashboard.py checks the rest).
MONITORING_PORTS = {"prometheus": 9090, "grafana": 3000}

# The apache/kafka image turns each KAFKA_* variable into a server property except these
# (kafka.docker.KafkaDockerWrapper, ExcludeServerPropsEnv).
KAFKA_NON_PROPERTY_ENV = {
    "KAFKA_VERSION",
    "KAFKA_HEAP_OPTS",
    "KAFKA_LOG4J_OPTS",
    "KAFKA_OPTS",
    "KAFKA_JMX_OPTS",
    "KAFKA_JVM_PERFORMANCE_OPTS",
    "KAFKA_GC_LOG_OPTS",
    "KAFKA_LOG4J_ROOT_LOGLEVEL",
    "KAFKA_LOG4J_LOGGERS",
    "KAFKA_TOOLS_LOG4J_LOGLEVEL",
    "KAFKA_JMX_HOSTNAME",
}
# The apache/hadoop image's entrypoint (envtoconf.py) writes a config file for each variable named
# like CORE-SITE.XML_key: with the configs mounted read-only, no service may set one.
HADOOP_ENVTOCONF_FORMATS = {"xml", "properties", "yaml", "yml", "env", "sh", "cfg", "conf"}


# Reading the files ------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load(COMPOSE_FILE.read_text())


@pytest.fixture(scope="module")
def svc(compose) -> dict:
    return compose["services"]


@pytest.fixture(scope="module")
def defaults() -> Settings:
    """The local stack's settings: every QUESTLOG_* variable unset."""
    return Settings.from_env({})


def env_of(service: dict) -> dict[str, str]:
    env = service.get("environment") or {}
    if isinstance(env, list):
        env = dict(item.split("=", 1) for item in env)
    return {k: str(v) for k, v in env.items()}


def questlog_env(service: dict) -> dict[str, str]:
    return {k: v for k, v in env_of(service).items() if k.startswith("QUESTLOG_")}


def port_of(address: str) -> int:
    return int(address.rstrip("/").rsplit(":", 1)[1])


def host_of(address: str) -> str:
    return address.split("://", 1)[-1].rstrip("/").rsplit(":", 1)[0]


def published(service: dict) -> list[tuple[str, int, int]]:
    """(host ip, host port, container port) of each published port."""
    out = []
    for port in service.get("ports", []):
        if isinstance(port, dict):
            out.append((port.get("host_ip", ""), int(port["published"]), int(port["target"])))
            continue
        parts = str(port).split("/")[0].split(":")
        ip = parts[0] if len(parts) == 3 else ""
        out.append((ip, int(parts[-2]) if len(parts) >= 2 else 0, int(parts[-1])))
    return out


def mounts(service: dict) -> list[tuple[str, str, bool]]:
    """(source, target, read-only) of each volume; sources of bind mounts start with . or /."""
    out = []
    for volume in service.get("volumes", []):
        if isinstance(volume, dict):
            out.append((volume["source"], volume["target"], bool(volume.get("read_only"))))
        else:
            parts = volume.split(":")
            out.append((parts[0], parts[1], len(parts) > 2 and "ro" in parts[2].split(",")))
    return out


def bind_mounts(compose) -> list[tuple[str, str, str, bool]]:
    return [
        (name, src, dst, ro)
        for name, s in compose["services"].items()
        for src, dst, ro in mounts(s)
        if src.startswith((".", "/"))
    ]


def d_options(command: list[str]) -> dict[str, str]:
    """The generic `-D key=value` options of a Hadoop daemon's command line."""
    out = {}
    for i, arg in enumerate(command):
        if arg == "-D":
            key, value = command[i + 1].split("=", 1)
        elif arg.startswith("-D") and "=" in arg:
            key, value = arg[2:].split("=", 1)
        else:
            continue
        out[key] = value
    return out


def hadoop_xml(name: str) -> dict[str, str]:
    root = ET.parse(COMPOSE_DIR / "hadoop" / name).getroot()
    return {p.findtext("name"): p.findtext("value") for p in root.findall("property")}


def properties(path: Path) -> dict[str, str]:
    lines = [line.strip() for line in path.read_text().splitlines()]
    return dict(line.split("=", 1) for line in lines if "=" in line and not line.startswith("#"))


def kafka_property(env_name: str) -> str:
    """The server property the apache/kafka image derives from a KAFKA_* variable."""
    return env_name.replace("KAFKA_", "", 1).lower().replace("_", ".").replace("...", "-").replace("..", "_")


def listeners(value: str) -> dict[str, str]:
    """'NAME://host:port,...' -> {NAME: 'host:port'}."""
    return dict(item.split("://", 1) for item in value.split(","))


def dockerfile_instructions() -> list[tuple[str, str]]:
    """(INSTRUCTION, arguments) with continuation lines joined and comments dropped."""
    out, pending = [], ""
    for line in DOCKERFILE.read_text().splitlines():
        if not pending and (not line.strip() or line.lstrip().startswith("#")):
            continue
        pending += line.rstrip("\\").strip() + " " if line.endswith("\\") else line.strip()
        if not line.endswith("\\"):
            word, _, rest = pending.partition(" ")
            out.append((word.upper(), rest.strip()))
            pending = ""
    return out


def dockerfile_values(kind: str) -> dict[str, str]:
    """ARG or ENV names with their values."""
    values = {}
    for word, rest in dockerfile_instructions():
        if word == kind:
            for name, value in re.findall(r"(\w+)=(\"[^\"]*\"|\S+)", rest):
                values[name] = value.strip('"')
    return values


def setup_cfg_requirements() -> dict[str, str]:
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    reqs = {}
    for line in cfg["options"]["install_requires"].strip().splitlines():
        name = re.split(r"[<>=!~; \[]", line.strip(), maxsplit=1)[0].lower()
        reqs[name] = line.strip()
    return reqs


def strings(node):
    if isinstance(node, str):
        yield node
    elif isinstance(node, dict):
        for key, value in node.items():
            yield from strings(key)
            yield from strings(value)
    elif isinstance(node, list):
        for item in node:
            yield from strings(item)


# The Compose file as a whole --------------------------------------------------------------------


@pytest.fixture(scope="module")
def compose_spec():
    """The Compose specification's JSON schema, as shipped by check-jsonschema (vendor.compose-spec).

    Only the file is used: the package's CLI is not imported (some releases of it need a newer
    click than faust-streaming allows)."""
    spec = importlib.util.find_spec("check_jsonschema")
    assert spec, "check-jsonschema (the test extra) carries the Compose specification's schema"
    path = Path(spec.submodule_search_locations[0]) / "builtin_schemas" / "vendor" / "compose-spec.json"
    schema = json.loads(path.read_text())
    assert schema["title"] == "Compose Specification"
    return jsonschema.validators.validator_for(schema)(schema)


def spec_errors(validator, document) -> list[str]:
    return [f"{'.'.join(map(str, e.absolute_path))}: {e.message}" for e in validator.iter_errors(document)]


def test_valid_against_the_compose_specification(compose_spec, compose):
    assert spec_errors(compose_spec, compose) == []


@pytest.mark.parametrize(
    "breakage",
    [
        lambda c: c["services"]["kafka"]["healthcheck"].update(start_period=["30s"]),
        lambda c: c["services"]["collector"].update(depends_on={"kafka": {"condition": "when_ready"}}),
        lambda c: c["services"]["trino"].update(healthchek={"test": ["CMD", "true"]}),
        lambda c: c.update(volume={"kafka-data": None}),
    ],
    ids=["start_period-not-a-duration", "unknown-condition", "misspelt-service-key", "misspelt-top-level-key"],
)
def test_the_specification_check_catches_a_broken_file(compose_spec, compose, breakage):
    broken = copy.deepcopy(compose)
    breakage(broken)
    assert spec_errors(compose_spec, broken)


def test_no_version_key_and_a_fixed_project_name(compose):
    assert "version" not in compose  # obsolete in the Compose specification
    assert not re.search(r"^version\s*:", COMPOSE_FILE.read_text(), re.MULTILINE)
    assert compose["name"] == "questlog"  # volumes and the network get the same names from any directory


def test_nothing_is_taken_from_the_host_environment(compose):
    # Compose would substitute $VAR / ${VAR} from the shell that runs it ($$ is a literal $).
    assert not [s for s in strings(compose) if re.search(r"(?<!\$)\$(?!\$)", s.replace("$$", ""))]


@pytest.mark.parametrize("name", PIPELINE)
def test_every_service_the_pipeline_needs_is_there(svc, name):
    assert name in svc


def test_service_name_hostname_and_container_name_agree(svc):
    for name, service in svc.items():
        assert service.get("hostname") == name, name
        assert service.get("container_name") == name, name


def test_images_are_pinned(svc):
    for name, service in svc.items():
        repo, _, tag = service["image"].rpartition(":")
        assert repo and tag and tag != "latest", f"{name}: {service['image']}"


@pytest.mark.parametrize("name,repo,version", IMAGES)
def test_image_versions_are_the_local_stacks(svc, name, repo, version):
    if version.endswith("."):  # a major version: any pinned release of it
        assert re.fullmatch(rf"{re.escape(repo)}:{re.escape(version)}\d+(-[a-z]+)?", svc[name]["image"])
    else:
        assert svc[name]["image"] == f"{repo}:{version}"


# Health checks and start-up order ---------------------------------------------------------------

DURATION = re.compile(r"^(\d+(us|ms|s|m|h))+$")


def test_one_shots_are_the_only_services_without_a_health_check(svc):
    for name, service in svc.items():
        assert ("healthcheck" in service) == (name not in ONE_SHOT), name


@pytest.mark.parametrize("name", [n for n in PIPELINE if n not in ONE_SHOT])
def test_long_running_services_have_a_health_check(svc, name):
    check = svc[name]["healthcheck"]
    assert not check.get("disable")
    assert check["test"][0] in ("CMD", "CMD-SHELL") and len(check["test"]) > 1
    for key in ("interval", "timeout", "start_period"):
        assert DURATION.match(check[key]), f"{name}.healthcheck.{key}={check.get(key)!r}"
    assert int(check["retries"]) >= 3


def test_depends_on_waits_for_health_or_completion(svc):
    for name, service in svc.items():
        deps = service.get("depends_on", {})
        assert isinstance(deps, dict), f"{name}: a bare depends_on list orders start-up but waits for nothing"
        for dep, spec in deps.items():
            condition = spec["condition"]
            if condition == "service_healthy":
                assert "healthcheck" in svc[dep], f"{name} waits for {dep}, which has no health check"
            else:
                assert condition == "service_completed_successfully" and dep in ONE_SHOT, f"{name} -> {dep}"


@pytest.mark.parametrize(
    "name,dep,condition",
    [
        ("namenode", "hdfs-init", "service_completed_successfully"),
        ("datanode", "hdfs-init", "service_completed_successfully"),
        ("datanode", "namenode", "service_healthy"),
        ("topics", "kafka", "service_healthy"),
        ("collector", "kafka", "service_healthy"),
        ("collector", "topics", "service_completed_successfully"),
        ("router", "kafka", "service_healthy"),
        ("router", "topics", "service_completed_successfully"),
        ("sink", "kafka", "service_healthy"),
        ("sink", "datanode", "service_healthy"),
        ("sink", "postgres", "service_healthy"),
        ("sink", "topics", "service_completed_successfully"),
        ("compactor", "datanode", "service_healthy"),
        ("compactor", "postgres", "service_healthy"),
        ("compactor", "trino", "service_healthy"),
        ("trino", "postgres", "service_healthy"),
        ("loadgen", "collector", "service_healthy"),
        ("kafka", "jmx-agent", "service_completed_successfully"),
        ("trino", "jmx-agent", "service_completed_successfully"),
    ],
)
def test_each_service_waits_for_what_it_uses(svc, name, dep, condition):
    assert svc[name]["depends_on"][dep]["condition"] == condition


def test_no_dependency_cycle(svc):
    def visit(name, path):
        assert name not in path, " -> ".join([*path, name])
        for dep in svc[name].get("depends_on", {}):
            visit(dep, [*path, name])

    for name in svc:
        visit(name, [])


# Config files: the local stack's, mounted read-only ----------------------------------------------


def test_mounted_files_exist_and_are_read_only(compose):
    binds = bind_mounts(compose)
    assert binds
    for name, src, dst, read_only in binds:
        assert (COMPOSE_DIR / src).resolve().exists(), f"{name}: {src}"
        assert read_only, f"{name}: {src} -> {dst} should be mounted :ro"


def test_every_shared_config_file_is_mounted(compose):
    mounted = {(COMPOSE_DIR / src).resolve() for _, src, _, _ in bind_mounts(compose)}
    shared = [p for d in ("kafka", "hadoop", "trino", "jmx") for p in (COMPOSE_DIR / d).rglob("*") if p.is_file()]
    assert shared
    for path in shared:
        assert any(path == m or m in path.parents for m in mounted), f"{path.relative_to(REPO_ROOT)} is not mounted"


@pytest.mark.parametrize(
    "name,src,dst",
    [
        ("kafka", "kafka/server.properties", "/mnt/shared/config/server.properties"),
        *[
            (node, f"hadoop/{f}", f"/opt/hadoop/etc/hadoop/{f}")
            for node in ("namenode", "datanode")
            for f in ("core-site.xml", "hdfs-site.xml", "log4j.properties")
        ],
        *[
            ("trino", f"trino/{f}", f"/etc/trino/{f}")
            for f in ("config.properties", "jvm.config", "log.properties", "catalog")
        ],
        ("kafka", "jmx/jmx-exporter.yaml", "/etc/jmx-exporter.yaml"),
        ("trino", "jmx/jmx-exporter.yaml", "/etc/jmx-exporter.yaml"),
    ],
)
def test_configs_are_mounted_where_the_images_read_them(svc, name, src, dst):
    assert (COMPOSE_DIR / src).resolve() in {(COMPOSE_DIR / s).resolve() for s, d, _ in mounts(svc[name]) if d == dst}


def test_data_lives_on_named_volumes(compose, svc):
    used = {src for s in svc.values() for src, _, _ in mounts(s) if not src.startswith((".", "/"))}
    assert used == set(compose.get("volumes", {}))
    tmp_dir = hadoop_xml("core-site.xml")["hadoop.tmp.dir"]
    assert ("kafka-data", env_of(svc["kafka"])["KAFKA_LOG_DIRS"]) in {(s, d) for s, d, _ in mounts(svc["kafka"])}
    assert ("namenode-data", tmp_dir) in {(s, d) for s, d, _ in mounts(svc["namenode"])}
    assert ("datanode-data", tmp_dir) in {(s, d) for s, d, _ in mounts(svc["datanode"])}
    assert ("postgres-data", "/var/lib/postgresql/data") in {(s, d) for s, d, _ in mounts(svc["postgres"])}


# Environment: the local stack's QUESTLOG_* variables, pointed at the containers --------------------


def services_with_questlog_env() -> list[str]:
    return [name for name, s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items() if questlog_env(s)]


@pytest.mark.parametrize("name", services_with_questlog_env())
def test_questlog_variables_are_the_settings_own(svc, name):
    env = questlog_env(svc[name])
    assert set(env) <= set(ENV_VARS), sorted(set(env) - set(ENV_VARS))
    Settings.from_env(env)  # and each value has the setting's type


def test_the_pipeline_gets_questlog_variables():
    assert set(APPS) | {"trino"} <= set(services_with_questlog_env())


@pytest.mark.parametrize("name", APPS)
def test_apps_get_every_address_that_differs_from_the_local_stack(svc, defaults, name):
    loopback = {env for env, value in defaults.to_env().items() if any(h in value for h in LOOPBACK)}
    assert {"QUESTLOG_KAFKA_BOOTSTRAP", "QUESTLOG_HDFS_URL", "QUESTLOG_TRINO_URL"} <= loopback
    env = questlog_env(svc[name])
    assert loopback <= set(env), sorted(loopback - set(env))
    assert not [k for k, v in env.items() if any(h in v for h in LOOPBACK)]  # in a container that is itself


def test_apps_share_one_environment(svc):
    base = questlog_env(svc["collector"])
    for name in APPS:
        env = questlog_env(svc[name])
        differs = {k for k in base.keys() | env.keys() if base.get(k) != env.get(k)}
        # The load generator is a client: its "collector bind" is where it sends requests.
        assert differs <= ({"QUESTLOG_COLLECTOR_BIND"} if name == "loadgen" else set()), name


def test_apps_are_built_from_this_repository(svc):
    images = set()
    for name in APPS:
        build = svc[name]["build"]
        assert (COMPOSE_DIR / build["context"]).resolve() == REPO_ROOT
        assert (COMPOSE_DIR / build["context"] / build["dockerfile"]).resolve() == DOCKERFILE
        images.add(svc[name]["image"])
    assert len(images) == 1


# Addresses: each side of every connection agrees --------------------------------------------------


def test_published_ports_are_bound_to_loopback(svc):
    ports = [(name, p) for name, s in svc.items() for p in published(s)]
    assert ports
    for name, (ip, _, _) in ports:
        assert ip == "127.0.0.1", name


def test_published_ports_are_the_local_stacks(svc, defaults):
    expected = {
        "collector": defaults.collector_port,
        "kafka": defaults.kafka_port,
        "namenode": port_of(defaults.webhdfs_url),
        "trino": defaults.trino_port,
        "router": defaults.router_web_port,
        "sink": int(defaults.sink_metrics_bind.rsplit(":", 1)[1]),
        **MONITORING_PORTS,
    }
    got = {name: [(host, container) for _, host, container in published(s)] for name, s in svc.items() if published(s)}
    assert got == {name: [(port, port)] for name, port in expected.items()}


def test_kafka_overrides_only_the_keys_the_local_runner_overrides(svc, defaults):
    env = env_of(svc["kafka"])
    overridden = {kafka_property(k) for k in env if k.startswith("KAFKA_") and k not in KAFKA_NON_PROPERTY_ENV}
    # the addresses (the local broker's SASL settings are its own: compose's brokers have none yet)
    assert overridden == set(services.kafka_addresses(defaults))
    assert overridden <= set(properties(COMPOSE_DIR / "kafka" / "server.properties"))


def test_kafka_listeners_serve_containers_and_the_host(svc, defaults):
    env, shared = env_of(svc["kafka"]), properties(COMPOSE_DIR / "kafka" / "server.properties")
    bound, advertised = listeners(env["KAFKA_LISTENERS"]), listeners(env["KAFKA_ADVERTISED_LISTENERS"])
    known = set(listeners(shared["listener.security.protocol.map"].replace(":", "://")))
    assert set(bound) <= known and set(advertised) <= known
    # Containers use the inter-broker listener, as kafka:<port>; the host the other, as the local stack's.
    inside = advertised.pop(shared["inter.broker.listener.name"])
    assert inside == questlog_env(svc["collector"])["QUESTLOG_KAFKA_BOOTSTRAP"]
    assert host_of(inside) == "kafka"
    assert list(advertised.values()) == [defaults.kafka_bootstrap]
    for name, address in {**advertised, "PLAINTEXT": inside}.items():
        assert port_of(bound[name]) == port_of(address)
    controller = shared["controller.listener.names"]
    assert env["KAFKA_CONTROLLER_QUORUM_VOTERS"] == f"1@kafka:{port_of(bound[controller])}"


def test_hdfs_daemons_override_every_loopback_address_and_nothing_else(svc, defaults):
    shared = {**hadoop_xml("core-site.xml"), **hadoop_xml("hdfs-site.xml")}
    options = d_options(svc["namenode"]["command"])
    assert options == d_options(svc["datanode"]["command"])  # one configuration, as locally
    loopback = {k for k, v in shared.items() if any(h in v for h in LOOPBACK)}
    assert loopback and loopback <= set(options)
    assert set(options) <= set(services.hadoop_config(defaults))
    for key, value in options.items():
        assert not any(h in value for h in LOOPBACK), key
        if re.fullmatch(r"[\w.-]+:\d+", shared.get(key, "")):
            assert port_of(value) == port_of(shared[key]), key  # only the host differs


def test_hdfs_addresses_match_the_pipelines(svc):
    options, env = d_options(svc["namenode"]["command"]), questlog_env(svc["collector"])
    assert options["fs.defaultFS"] == env["QUESTLOG_HDFS_URL"] == questlog_env(svc["trino"])["QUESTLOG_HDFS_URL"]
    assert options["dfs.namenode.rpc-address"] == env["QUESTLOG_HDFS_URL"].split("://", 1)[1]
    assert options["dfs.namenode.http-address"] == env["QUESTLOG_WEBHDFS_URL"].split("://", 1)[1]
    assert host_of(env["QUESTLOG_HDFS_URL"]) == "namenode"
    # The sink reaches the DataNode by the name it registers with (dfs.client.use.datanode.hostname).
    assert options["dfs.datanode.hostname"] == "datanode"


def test_the_namenode_is_formatted_where_it_runs(svc):
    # The image formats with the XML alone, so the name directory must come from the XML too.
    shared = {**hadoop_xml("core-site.xml"), **hadoop_xml("hdfs-site.xml")}
    assert "dfs.namenode.name.dir" not in shared and "hadoop.tmp.dir" not in d_options(svc["namenode"]["command"])
    assert env_of(svc["namenode"])["ENSURE_NAMENODE_DIR"] == shared["hadoop.tmp.dir"] + "/dfs/name"


@pytest.mark.parametrize("name", ["hdfs-init", "namenode", "datanode"])
def test_no_variable_makes_the_hadoop_image_rewrite_a_mounted_config(svc, name):
    for key in env_of(svc[name]):
        parts = re.split(r"[_.]", key)
        assert len(parts) < 2 or parts[1].lower().split("!")[0] not in HADOOP_ENVTOCONF_FORMATS, key


def test_trino_gets_what_its_catalogs_read_and_serves_the_pipelines_address(svc):
    wanted = {
        m
        for p in (COMPOSE_DIR / "trino" / "catalog").glob("*.properties")
        for m in re.findall(r"\$\{ENV:(\w+)\}", p.read_text())
    }
    assert wanted and wanted <= set(env_of(svc["trino"]))
    trino_url = questlog_env(svc["collector"])["QUESTLOG_TRINO_URL"]
    port = int(properties(COMPOSE_DIR / "trino" / "config.properties")["http-server.http.port"])
    assert host_of(trino_url) == "trino" and port_of(trino_url) == port
    assert [c for _, _, c in published(svc["trino"])] == [port]


def test_collector_listens_where_its_settings_say(svc):
    command, env = svc["collector"]["command"], questlog_env(svc["collector"])
    assert command[0] == "granian" and command[-2:] == ["--factory", "producer:create_app"]
    bind = f"{command[command.index('--host') + 1]}:{command[command.index('--port') + 1]}"
    assert bind == env["QUESTLOG_COLLECTOR_BIND"]
    assert [c for _, _, c in published(svc["collector"])] == [port_of(env["QUESTLOG_COLLECTOR_BIND"])]
    health = re.search(r"'(http://[^']+)'", svc["collector"]["healthcheck"]["test"][-1]).group(1)
    assert health == f"http://127.0.0.1:{port_of(env['QUESTLOG_COLLECTOR_BIND'])}/healthz"


def test_the_collector_runs_the_local_runners_command(svc):
    env = questlog_env(svc["collector"])
    local = services.collector(Settings.from_env(env)).argv
    assert [Path(local[0]).name, *local[1:]] == svc["collector"]["command"]


def test_keys_are_on_in_compose_and_the_key_file_is_mounted(svc):
    path = questlog_env(svc["collector"])["QUESTLOG_WRITE_KEYS"]
    [(source, target)] = [(src, dst) for src, dst, ro in mounts(svc["collector"]) if path.startswith(dst + "/") and ro]
    keys = COMPOSE_DIR / source / path[len(target) + 1 :]
    from producer.auth import WriteKeys

    assert WriteKeys(keys).source_for(LOADGEN_KEY) == "demo"


LOADGEN_KEY = "questlog-demo-key-4d1c9a7e"


def test_loadgen_runs_the_seeds_ab_against_the_collector(svc):
    command, env = svc["loadgen"]["command"], questlog_env(svc["loadgen"])
    assert command[0] == "ab" and "Host: user1.comcast.com" in command
    assert f"Authorization: Bearer {LOADGEN_KEY}" in command
    assert command[-1] == f"http://{env['QUESTLOG_COLLECTOR_BIND']}/purchase_a_sword"
    assert host_of(env["QUESTLOG_COLLECTOR_BIND"]) == "collector"
    assert port_of(env["QUESTLOG_COLLECTOR_BIND"]) == port_of(questlog_env(svc["collector"])["QUESTLOG_COLLECTOR_BIND"])
    assert svc["loadgen"]["profiles"] == ["tools"]


@pytest.mark.parametrize("name,module", [("router", "faust_app/app.py"), ("sink", "spark_sink/job.py")])
def test_apps_run_the_command_their_module_documents(svc, name, module):
    documented = re.search(r"Run: `([^`]+)`", ast.get_docstring(ast.parse((REPO_ROOT / module).read_text())))
    command = svc[name]["command"]
    command = command[-1].split("exec ", 1)[1] if command[0] == "sh" else " ".join(command)
    assert command == documented.group(1)


def test_sink_health_is_its_ready_file(svc):
    ready = questlog_env(svc["sink"])["QUESTLOG_HOME"] + "/run/sink.ready"  # spark_sink.job.main
    assert svc["sink"]["healthcheck"]["test"] == ["CMD", "test", "-f", ready]
    assert f"rm -f {ready} " in svc["sink"]["command"][-1]  # a stale one from a killed run goes first


def python_snippets() -> list[tuple[str, str]]:
    found = []
    for name, s in yaml.safe_load(COMPOSE_FILE.read_text())["services"].items():
        for argv in (s.get("command"), s.get("healthcheck", {}).get("test")):
            if isinstance(argv, list) and "python" in argv and "-c" in argv:
                found.append((name, argv[argv.index("-c") + 1]))
    return found


@pytest.mark.parametrize("name,code", python_snippets(), ids=[n for n, _ in python_snippets()])
def test_inline_python_uses_code_that_exists(name, code):
    tree = ast.parse(code)  # a syntax error fails here
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            module = importlib.import_module(node.module)
            for alias in node.names:
                assert hasattr(module, alias.name), f"{name}: {node.module}.{alias.name}"
        elif isinstance(node, ast.Import):
            for alias in node.names:
                importlib.import_module(alias.name)


# The pipeline's image -------------------------------------------------------------------------


def test_image_is_python_311_with_a_java_17_runtime_and_ab():
    instructions = dockerfile_instructions()
    assert re.fullmatch(r"python:3\.11-[\w.-]+", next(rest for word, rest in instructions if word == "FROM"))
    installs = " ".join(rest for word, rest in instructions if word == "RUN" and "apt-get install" in rest)
    assert "openjdk-17-jre-headless" in installs and "apache2-utils" in installs


def test_image_installs_the_dependencies_from_setup_cfg():
    instructions = dockerfile_instructions()
    pip = [i for i, (word, rest) in enumerate(instructions) if word == "RUN" and "pip install" in rest]
    assert pip
    copies_setup_cfg = [
        i for i, (word, rest) in enumerate(instructions) if word == "COPY" and "setup.cfg" in rest.split()
    ]
    assert copies_setup_cfg and copies_setup_cfg[0] < pip[0]
    for i in pip:
        run = instructions[i][1]
        assert "requirements" not in run and " -r " not in run, run
        assert re.search(r"pip install( --?[\w-]+)* \.(;|$|\s)", run), run  # the project itself


def test_image_copies_only_files_that_exist():
    for word, rest in dockerfile_instructions():
        if word == "COPY" and "--from" not in rest:
            for src in rest.split()[:-1]:
                if not src.startswith("--") and "*" not in src:
                    assert (REPO_ROOT / src).exists(), src


def test_image_bakes_the_connector_the_sink_loads_where_it_looks(svc, monkeypatch):
    env = dockerfile_values("ENV")
    bake = next(rest for word, rest in dockerfile_instructions() if word == "RUN" and "spark.jars.packages" in rest)
    # the packages are the ones the sink asks for, the connector's computed from the installed pyspark
    assert 'SPARK_PACKAGES="$(python -m spark_sink.connector)"' in bake
    assert "'spark.jars.packages', '$SPARK_PACKAGES'" in bake
    copied = [rest for word, rest in dockerfile_instructions() if word == "COPY"]
    assert "spark_sink/__init__.py spark_sink/connector.py spark_sink/" in copied
    assert copied.index("spark_sink/__init__.py spark_sink/connector.py spark_sink/") < copied.index(". .")
    assert "'spark.jars.ivy', '$QUESTLOG_CACHE/ivy'" in bake
    # ...which is where the sink's Spark session, built from the sink's environment, looks for it.
    sink_env = questlog_env(svc["sink"])
    assert sink_env["QUESTLOG_CACHE"] == env["QUESTLOG_CACHE"]
    conf = {}
    builder = SimpleNamespace(getOrCreate=lambda: None)
    builder.master = builder.appName = lambda *_: builder
    builder.config = lambda key, value: conf.update({key: value}) or builder
    monkeypatch.setattr(spark_sink.job, "SparkSession", SimpleNamespace(builder=builder))
    monkeypatch.setattr(spark_sink.job, "attach_catalog", lambda spark, settings: None)
    spark_sink.job.build_session(Settings.from_env(sink_env))
    import pyspark

    assert conf["spark.jars.packages"].split(",")[0] == (
        f"org.apache.spark:spark-sql-kafka-0-10_2.13:{pyspark.__version__}"
    )
    assert conf["spark.jars.packages"] == ",".join(spark_sink.connector.PACKAGES)
    assert conf["spark.jars.ivy"] == env["QUESTLOG_CACHE"] + "/ivy"


def test_connector_and_iceberg_runtime_match_the_installed_pyspark():
    group, artifact, version = spark_sink.connector.KAFKA_PACKAGE.split(":")
    assert setup_cfg_requirements()["pyspark"] == f"pyspark=={version}"
    scala = artifact.rsplit("_", 1)[1]
    jars = Path(importlib.util.find_spec("pyspark").submodule_search_locations[0]) / "jars"
    assert (jars / f"spark-sql_{scala}-{version}.jar").exists()
    _, runtime, _ = spark_sink.connector.ICEBERG_PACKAGE.split(":")
    line = ".".join(version.split(".")[:2])
    assert runtime == f"iceberg-spark-runtime-{line}_{scala}"


def test_dockerignore_keeps_state_out_and_the_project_in():
    patterns = [
        line.strip()
        for line in (REPO_ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    ignored = lambda name: any(fnmatch.fnmatch(name, p.lstrip("/")) for p in patterns)  # noqa: E731
    assert ignored(".venv") and ignored(".questlog") and ignored(".git")
    cfg = configparser.ConfigParser()
    cfg.read(REPO_ROOT / "setup.cfg")
    packages = [p.strip() for p in cfg["options.packages.find"]["include"].split() if "*" not in p]
    for name in ["pyproject.toml", "setup.cfg", "README.md", *packages]:
        assert not ignored(name), name


@pytest.mark.parametrize("name", ["collector", "router", "sink"])
def test_the_stages_share_the_deployed_catalog_from_the_repo(svc, name):
    """A `questlog catalog deploy` on the host must reach all three running stages."""
    path = env_of(svc[name])["QUESTLOG_CATALOG"]
    sources = [(source, target) for source, target, _ in mounts(svc[name]) if path.startswith(target + "/")]
    assert len(sources) == 1, mounts(svc[name])
    source, target = sources[0]
    host_file = (COMPOSE_DIR / source / path[len(target) + 1 :]).resolve()
    assert host_file == (REPO_ROOT / "questlog" / "catalog" / "catalog.json").resolve()


def test_the_collectors_metrics_are_summed_over_its_workers_as_locally(svc):
    assert env_of(svc["collector"]).get("PROMETHEUS_MULTIPROC_DIR")


def test_compose_creates_the_topics_the_pipeline_names(svc, monkeypatch, tmp_path):
    """compose's one-shot `topics` runs questlog.kafka_admin, whose list is Catalog.topics: the
    function the runner, the router and the sink create their topics with too."""
    import questlog.kafka_admin as kafka_admin
    from questlog.catalog import load_catalog

    assert svc["topics"]["command"] == ["python", "-m", "questlog.kafka_admin"]
    env = {k: v for k, v in questlog_env(svc["topics"]).items() if "${" not in v}
    for name in ENV_VARS:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setenv("QUESTLOG_HOME", str(tmp_path))  # its last-good catalog copy
    monkeypatch.setenv("QUESTLOG_CATALOG", str(REPO_ROOT / "questlog" / "catalog" / "catalog.json"))
    created = []
    monkeypatch.setattr(
        kafka_admin,
        "ensure_topics",
        lambda kafka, topics, partitions, timeout_s=30.0, config=None, replication=0, min_insync=0: (
            created.append((kafka, list(topics), partitions, config, replication, min_insync)) or {}
        ),
    )
    kafka_admin.main()
    settings = Settings.from_env()
    topics = load_catalog(str(REPO_ROOT / "questlog" / "catalog" / "catalog.json")).topics(
        settings.raw_topic, settings.dlq_topic
    )
    n = settings.topic_partitions
    bounded = {"retention.bytes": str(4 * 2**30), "segment.bytes": str(2**29), "retention.ms": str(7 * 24 * 3_600_000)}
    auto = (0, 0)  # copies and min in-sync: as the brokers up allow (compose sets neither)
    hour = str(3_600_000)  # a forgotten player's entry leaves the changelog within hours, not never
    compacted = {
        "cleanup.policy": "compact",
        "segment.ms": hour,
        "max.compaction.lag.ms": hour,
        "delete.retention.ms": hour,
    }
    kafka = {"bootstrap.servers": settings.kafka_bootstrap}  # compose's Kafka: no SASL yet
    assert created == [
        (kafka, topics, n, bounded, *auto),
        (kafka, [f"{settings.router_id}-__assignor-__leader"], 1, None, *auto),  # Faust's
        # the router's own, for agent sessions (faust_app.session_agent): its activity, its table's changelog
        (kafka, [settings.activity_topic], n, bounded, *auto),
        (kafka, [settings.sessions_changelog_topic], n, compacted, *auto),
    ]
    assert settings.raw_topic in topics and settings.dlq_topic in topics
    assert all(settings.topic_for(name) in topics for name in load_catalog(settings.catalog).names)
