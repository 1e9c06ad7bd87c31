import pytest

from questlog.settings import ENV_VARS, Settings


def test_defaults_are_the_documented_local_contracts():
    s = Settings.from_env({})
    assert (s.kafka_bootstrap, s.collector_url, s.trino_url) == (
        "127.0.0.1:9092",
        "http://127.0.0.1:5000",
        "http://127.0.0.1:8080",
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
