"""The compose stack's monitoring profile, checked without Docker: Prometheus scrapes every stage
where it serves /metrics, Grafana is provisioned with the dashboard, and every series a panel
reads is one the code exports, or, for the JVM heap of the stack, one a configured exporter serves:
Hadoop's /prom (our config turns it on) for the NameNode and DataNode, the Prometheus JMX
exporter's javaagent (attached by the local runner and by compose) for Kafka and Trino.
tests/integration/test_metrics_endpoints.py scrapes each of them from the real local stack."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET

import prometheus_client
import pytest
import yaml

import faust_app.router  # noqa: F401  (registers the router's series)
import producer.metrics  # noqa: F401  (the collector's)
import spark_sink.metrics  # noqa: F401  (the sink's)
from ops.stack import artifacts
from ops.stack.services import JMX_AGENT_SERIES
from questlog.settings import REPO_ROOT, Settings

COMPOSE = REPO_ROOT / "compose"
DASHBOARD = COMPOSE / "grafana" / "dashboards" / "questlog.json"
# Series of the stages, by the job that scrapes them: what the dashboard may read from each.
STAGE_PREFIXES = {
    "collector": ("questlog_events_", "questlog_requests_", "questlog_produce_"),
    "router": ("questlog_router_",),
    "sink": ("questlog_sink_",),
}
HADOOP_SERIES = re.compile(r"^jvm_metrics_[a-z_]+$")  # Hadoop's PrometheusMetricsSink names
PROMQL_WORDS = {
    "sum",
    "by",
    "rate",
    "max",
    "min",
    "avg",
    "histogram_quantile",
    "le",
    "without",
    "increase",
    "irate",
    "job",
    "count",
    "on",
    "ignoring",
}


def exported() -> set[str]:
    """Every series name the code registers: a counter's with _total, a histogram's with _bucket,
    _sum and _count (labelled families have no samples until used: their names come from the type)."""
    suffixes = {"counter": ("_total",), "histogram": ("_bucket", "_sum", "_count"), "gauge": ("",)}
    return {
        family.name + suffix
        for family in prometheus_client.REGISTRY.collect()
        for suffix in suffixes.get(family.type, ("",))
    }


def dashboard_series() -> set[str]:
    exprs = [t["expr"] for p in json.loads(DASHBOARD.read_text())["panels"] for t in p["targets"]]
    names = set()
    for expr in exprs:
        expr = re.sub(r"\{[^}]*\}", "", re.sub(r'"[^"]*"', "", expr))  # label matchers and strings
        expr = re.sub(r"\[[^\]]*\]", "", expr)  # range selectors
        expr = re.sub(r"\b(by|without)\s*\([^)]*\)", "", expr)  # grouping labels
        names |= {w for w in re.findall(r"[a-zA-Z_:][a-zA-Z0-9_:]*", expr) if w not in PROMQL_WORDS}
    return names


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())


def test_every_panel_reads_a_series_the_code_exports_or_hadoop_serves():
    series = dashboard_series()
    assert {
        "questlog_events_accepted_total",
        "questlog_router_events_routed_total",
        "questlog_sink_rows_written_total",
        "questlog_router_lag_records",
        "questlog_sink_lag_records",
        "questlog_sink_freshness_seconds",
        "questlog_router_dead_letters_total",
    } <= series
    assert unknown(series) == []


def unknown(series: set[str]) -> list[str]:
    ours = exported() | set(JMX_AGENT_SERIES)
    return sorted(s for s in series if s not in ours and not HADOOP_SERIES.match(s))


def heap_panel() -> dict:
    return next(p for p in json.loads(DASHBOARD.read_text())["panels"] if "JVM heap" in p["title"])


def test_the_heap_panel_shows_every_jvm_of_the_stack():
    exprs = " ".join(t["expr"] for t in heap_panel()["targets"])
    assert "questlog_sink_jvm_heap_used_bytes" in exprs  # the sink's Spark driver
    jobs = set()
    for matcher in re.findall(r'job=~"([^"]*)"', exprs):
        jobs |= set(matcher.split("|"))
    assert jobs == {"kafka", "trino", "namenode", "datanode"}


def test_the_jmx_agent_is_attached_in_compose_where_prometheus_scrapes_it(compose):
    svc = compose["services"]
    jobs = {
        j["job_name"]: j
        for j in yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    options = {
        "kafka": svc["kafka"]["environment"]["KAFKA_OPTS"],
        "trino": svc["trino"]["environment"]["JAVA_TOOL_OPTIONS"],
    }
    for name, option in options.items():
        jar, port, config = re.fullmatch(r"-javaagent:(\S+)=(\d+):(\S+)", option).groups()
        mounts = {v.split(":")[1]: v.split(":")[0] for v in svc[name]["volumes"]}
        assert (COMPOSE / mounts[config]).resolve() == (COMPOSE / "jmx" / "jmx-exporter.yaml").resolve()
        assert mounts[jar.rsplit("/", 1)[0]] == "jmx-agent"  # the one-shot's volume
        assert jobs[name]["static_configs"][0]["targets"] == [f"{name}:{port}"]
        assert jobs[name].get("metrics_path", "/metrics") == "/metrics"
    # The one-shot fetches the pinned agent and checks it against the pinned SHA-256.
    fetch = " ".join(svc["jmx-agent"]["command"])
    assert f"-Dartifact={artifacts.JMX_AGENT}" in fetch and "--strict-checksums" in fetch
    assert f"{artifacts.PINNED_SHA256[artifacts.JMX_AGENT]}  /opt/jmx-agent/jmx_prometheus_javaagent.jar" in fetch
    assert "-Dmdep.stripVersion=true" in fetch and "sha256sum -c" in fetch
    # Kafka's health check must not start a second agent on the broker's port.
    assert "KAFKA_OPTS= " in svc["kafka"]["healthcheck"]["test"][1]


def test_a_misspelt_or_unserved_series_would_be_caught():
    assert unknown(
        {
            "questlog_router_events_routd_total",
            "questlog_sink_lag_records",
            "jvm_memory_used_bytes",
            "kafka_server_heap_bytes",
        }
    ) == ["kafka_server_heap_bytes", "questlog_router_events_routd_total"]


def test_hadoops_prom_endpoint_is_on_where_the_heap_panel_reads_it():
    root = ET.parse(COMPOSE / "hadoop" / "core-site.xml").getroot()
    props = {p.findtext("name"): p.findtext("value") for p in root.findall("property")}
    assert props["hadoop.prometheus.endpoint.enabled"] == "true"
    jobs = {
        j["job_name"]: j
        for j in yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    assert jobs["namenode"]["metrics_path"] == jobs["datanode"]["metrics_path"] == "/prom"


def test_prometheus_scrapes_each_stage_where_it_serves_metrics(compose):
    env = compose["x-app-environment"]
    settings = Settings.from_env({k: str(v) for k, v in env.items()})
    jobs = {
        j["job_name"]: j
        for j in yaml.safe_load((COMPOSE / "prometheus" / "prometheus.yml").read_text())["scrape_configs"]
    }
    targets = {name: j["static_configs"][0]["targets"] for name, j in jobs.items()}
    assert targets["collector"] == [f"collector:{settings.collector_port}"]
    assert targets["router"] == [f"{settings.router_web_host}:{settings.router_web_port}"]
    assert targets["sink"] == [f"sink:{settings.sink_metrics_bind.rsplit(':', 1)[1]}"]
    assert settings.sink_metrics_bind.startswith("0.0.0.0:")  # reachable from Prometheus' container
    for job, prefixes in STAGE_PREFIXES.items():
        assert jobs[job].get("metrics_path", "/metrics") == "/metrics"
        assert any(s.startswith(prefixes) for s in dashboard_series()), job


def test_monitoring_is_a_profile_with_pinned_images_and_a_provisioned_dashboard(compose):
    svc = compose["services"]
    for name in ("prometheus", "grafana"):
        assert svc[name]["profiles"] == ["monitoring"]
        assert not svc[name]["image"].endswith(":latest") and ":" in svc[name]["image"]
    mounts = {v.split(":")[1]: v.split(":")[0] for v in svc["grafana"]["volumes"]}
    assert (COMPOSE / mounts["/var/lib/grafana/dashboards"] / "questlog.json").resolve() == DASHBOARD
    provider = yaml.safe_load((COMPOSE / "grafana/provisioning/dashboards/questlog.yml").read_text())
    assert provider["providers"][0]["options"]["path"] == "/var/lib/grafana/dashboards"
    source = yaml.safe_load((COMPOSE / "grafana/provisioning/datasources/prometheus.yml").read_text())
    uid = source["datasources"][0]["uid"]
    assert source["datasources"][0]["url"] == "http://prometheus:9090"
    panels = json.loads(DASHBOARD.read_text())["panels"]
    assert {p["datasource"]["uid"] for p in panels} == {uid}
    titles = " ".join(p["title"] for p in panels)
    for topic in ("Events/s per stage", "Events/s per type", "Lag", "Freshness", "Dead letters", "JVM heap"):
        assert topic in titles
