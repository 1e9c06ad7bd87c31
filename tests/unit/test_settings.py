import pytest

from questlog.settings import ENV_VARS, REPO_ROOT, Settings


def test_defaults_are_the_documented_local_contracts():
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.collector_url, s.trino_url) == (
        "127.0.0.1:9092",
        "http://127.0.0.1:5000",
        "https://127.0.0.1:8080",  # authenticated: HTTPS only (ARCHITECTURE.md: "or HTTPS once authenticated")
    )
    assert (s.hdfs_url, s.webhdfs_url, s.router_web_port) == ("hdfs://127.0.0.1:8020", "http://127.0.0.1:9870", 6066)
    assert (s.raw_topic, s.dlq_topic, s.topic_for("join_guild")) == ("events", "events.dlq", "events.join_guild")
    assert s.home.endswith(".questlog")


def test_environment_then_overrides():
    s = Settings.from_env(
        {"QUESTLOG_TRINO_URL": "http://trino:8081", "QUESTLOG_TOPIC_PARTITIONS": "3"}, topic_partitions=4
    )
    assert (s.trino_host, s.trino_port, s.topic_partitions) == ("trino", 8081, 4)


def test_a_bad_number_names_the_variable():
    with pytest.raises(ValueError, match="QUESTLOG_ROUTER_WEB_PORT='x' is not a valid int"):
        Settings.from_env({"QUESTLOG_ROUTER_WEB_PORT": "x"})


def test_to_env_round_trips_and_uses_only_known_names():
    s = Settings.from_env({}, kafka_bootstrap="k:1")
    assert set(s.to_env()) == set(ENV_VARS)
    assert Settings.from_env(s.to_env()) == s


def test_unknown_override_is_an_error():
    with pytest.raises(TypeError, match="unknown settings: nope"):
        Settings.from_env({}, nope=1)


def test_addresses_are_parsed_as_urls():
    s = Settings.from_env(
        {
            "QUESTLOG_TRINO_URL": "https://ana%40studio:s%3Acret@trino.example.com",
            "QUESTLOG_KAFKA_BOOTSTRAP": "[::1]:19092,broker2:9092",
            "QUESTLOG_HDFS_URL": "hdfs://namenode.example.com",
            "QUESTLOG_WEBHDFS_URL": "https://namenode.example.com:9871/",
            "QUESTLOG_COLLECTOR_BIND": "[::1]:5000",
        }
    )
    assert (s.trino_scheme, s.trino_host, s.trino_port) == ("https", "trino.example.com", 443)
    assert s.trino_credentials == ("ana@studio", "s:cret")
    assert (s.kafka_host, s.kafka_port) == ("::1", 19092)
    assert s.hdfs_rpc_address == "namenode.example.com:8020"
    assert s.webhdfs_address == "namenode.example.com:9871"
    assert (s.collector_host, s.collector_port, s.collector_url) == ("::1", 5000, "http://[::1]:5000")
    plain = Settings.from_env({"QUESTLOG_TRINO_URL": "http://trino:8080/"})
    assert (plain.trino_scheme, plain.trino_host, plain.trino_port, plain.trino_credentials) == (
        "http",
        "trino",
        8080,
        None,
    )
    assert Settings.from_env({"QUESTLOG_TRINO_URL": "http://reader@trino"}).trino_credentials == ("reader", None)


@pytest.mark.parametrize(
    "name,value",
    [
        ("QUESTLOG_TRINO_URL", "trino.example.com:8080"),
        ("QUESTLOG_TRINO_URL", "http://trino:80x"),
        ("QUESTLOG_TRINO_URL", "ftp://trino"),
        ("QUESTLOG_HDFS_URL", "http://namenode:8020"),
        ("QUESTLOG_COLLECTOR_BIND", "127.0.0.1"),
        ("QUESTLOG_COLLECTOR_BIND", "127.0.0.1:port"),
    ],
)
def test_a_bad_address_names_the_variable_or_value(name, value):
    s = Settings.from_env({name: value})
    with pytest.raises(ValueError) as error:
        _ = s.trino_port, s.hdfs_rpc_address, s.collector_port
    assert value in str(error.value)


# A shifted copy for the test, fault and bench stacks: one method, every port.


def test_a_shifted_copy_moves_every_port_and_nothing_else(tmp_path):
    import dataclasses

    base = Settings.from_env({})
    moved = base.shifted(12_000, tmp_path, sink_trigger_s=1.0)
    fields = {f.name: f for f in dataclasses.fields(Settings)}
    changed = {name for name in fields if getattr(moved, name) != getattr(base, name)}
    ports = {name for name, f in fields.items() if f.metadata["port"]}
    assert changed == ports | {"home", "catalog", "sink_trigger_s"}
    assert (moved.kafka_port, moved.collector_port, moved.trino_port) == (21092, 17000, 20080)
    assert moved.catalog_db_url == "postgresql://questlog@127.0.0.1:17433/questlog"
    assert (moved.home, moved.catalog) == (str(tmp_path), str(tmp_path / "catalog.json"))
    assert Settings.from_env(moved.to_env()) == moved


def test_every_listening_port_is_marked_so_that_no_stack_shift_forgets_one():
    """A field that holds a port (its name, or a default of host:port or a URL with a port) is
    declared with port=True: the shift that drifted between conftest, faults and the bench cannot."""
    import dataclasses
    import re

    base = Settings.from_env({})
    for f in dataclasses.fields(Settings):
        value = getattr(base, f.name)
        looks_like_port = f.name.endswith("_port") or (
            isinstance(value, str) and re.search(r"(^|[@/])[\w.\[\]:-]+:\d+(/|$)", value) is not None
        )
        assert f.metadata["port"] == looks_like_port, f.name


def test_a_shift_past_the_ephemeral_range_is_refused(tmp_path):
    with pytest.raises(ValueError, match="outside 1-32767"):
        Settings.from_env({}).shifted(30_000, tmp_path)


def test_the_test_fault_and_bench_stacks_derive_their_settings_by_shifting(tmp_path):
    from benchmarks.stack import PORT_SHIFT, bench_settings
    from tests.conftest import OFFSET, stack_settings

    base = Settings.from_env({})
    assert stack_settings(tmp_path).kafka_port == base.kafka_port + OFFSET
    assert bench_settings(tmp_path).kafka_port == base.kafka_port + PORT_SHIFT
    for path in ("tests/conftest.py", "benchmarks/stack.py", "ops/faults.py"):
        assert ".shifted(" in (REPO_ROOT / path).read_text(), path


def test_no_module_reads_a_questlog_variable_behind_the_settings_back():
    """Only questlog/settings.py reads QUESTLOG_* variables; the client, which runs in games with
    no settings of the pipeline, reads the one it documents (QUESTLOG_CATALOG)."""
    import re

    allowed = {"questlog/settings.py": None, "questlog_client/tracker.py": {"QUESTLOG_CATALOG"}}
    read = re.compile(r"""(?:environ\.get\(|environ\[|getenv\()\s*["'](QUESTLOG_\w+)""")
    for package in (
        "questlog",
        "producer",
        "faust_app",
        "spark_sink",
        "compactor",
        "ops",
        "questlog_client",
        "benchmarks",
        "tests",
    ):
        for path in (REPO_ROOT / package).rglob("*.py"):
            rel = path.relative_to(REPO_ROOT).as_posix()
            names = set(read.findall(path.read_text()))
            if rel in allowed:
                assert allowed[rel] is None or names <= allowed[rel], (rel, names)
            else:
                assert not names, f"{rel} reads {sorted(names)} itself; add a setting or a harness variable"
