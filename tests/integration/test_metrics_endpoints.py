"""Each stage's GET /metrics on the real pipeline parses with prometheus_client's parser and
names every series the Grafana dashboard reads from that stage; every JVM of the stack serves the
heap series the dashboard reads."""

from __future__ import annotations

import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from ops.stack import services
from tests.helpers import wait_for
from tests.unit.test_dashboard import STAGE_PREFIXES, dashboard_series, heap_panel

pytestmark = pytest.mark.integration


def series(url: str) -> set[str]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {s.name for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_every_stage_serves_the_series_the_dashboard_reads(live_settings):
    s = live_settings
    run = uuid.uuid4().hex[:8]
    events = [
        {"event_type": "level_up", "level": 2, "character_class": f"c-{run}"},
        {"event_type": "purchase_sword", "sword_type": "katana", "price": "free"},
    ]  # a dead letter
    response = requests.post(f"{s.collector_url}/events", json=events, timeout=30)
    assert 200 <= response.status_code < 300, response.text
    urls = {"collector": f"{s.collector_url}/metrics", "router": s.router_metrics_url, "sink": s.sink_metrics_url}
    wanted = dashboard_series()
    for stage, url in urls.items():
        want = {name for name in wanted if name.startswith(STAGE_PREFIXES[stage])}
        assert want, stage
        # Labelled counters appear once they count something: wait for the events to get there.
        got = wait_for(
            lambda want=want, url=url: (lambda have: have if want <= have else None)(series(url)),
            timeout_s=120,
            interval_s=2,
            what=f"{stage}'s /metrics to name {sorted(want)}",
        )
        assert want <= got
    routed = ("questlog_router_events_routed_total", (("event_type", "level_up"),))
    router = wait_for(
        lambda: (lambda have: have if have.get(routed) else None)(samples(urls["router"])),
        timeout_s=60,
        interval_s=1,
        what="the router to count the level_up event",
    )
    assert router[("questlog_router_dead_letters_total", (("reason_code", "wrong_type"),))] >= 1
    assert router[routed] >= 1


def samples(url: str) -> dict[tuple[str, tuple], float]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200, url
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(response.text)
        for s in family.samples
    }


def test_every_jvm_of_the_stack_serves_the_heap_series_the_dashboard_reads(live_settings):
    """The JVM heap panel reads Kafka's and Trino's heap from the JMX exporter's javaagent the
    local runner attaches, the NameNode's and DataNode's from Hadoop's /prom and the sink driver's
    from its /metrics: each scraped here from the running stack, each a heap actually in use."""
    s = live_settings
    agents = {"kafka": services.kafka_jvm_metrics_address(s), "trino": services.trino_jvm_metrics_address(s)}
    for name, (host, port) in agents.items():
        got = samples(f"http://{host}:{port}/metrics")
        assert set(services.JMX_AGENT_SERIES) <= {n for n, _ in got}, name
        used, limit = (
            got[("jvm_memory_used_bytes", (("area", "heap"),))],
            got[("jvm_memory_max_bytes", (("area", "heap"),))],
        )
        assert 0 < used <= limit, (name, used, limit)
    datanode_http = f"http://{s.hdfs_rpc_address.rsplit(':', 1)[0]}:{s.hdfs_datanode_port - 2}"
    for name, url in {"namenode": f"{s.webhdfs_url}/prom", "datanode": f"{datanode_http}/prom"}.items():
        heap = {labels: v for (n, labels), v in samples(url).items() if n == "jvm_metrics_mem_heap_used_m"}
        assert heap and all(v > 0 for v in heap.values()), (name, heap)
        assert ("processname", "NameNode" if name == "namenode" else "DataNode") in next(iter(heap))
    assert samples(s.sink_metrics_url)[("questlog_sink_jvm_heap_used_bytes", ())] > 0
    # and these are the series the panel reads
    panel = " ".join(t["expr"] for t in heap_panel()["targets"])
    for name in (*services.JMX_AGENT_SERIES[:1], "jvm_metrics_mem_heap_used_m", "questlog_sink_jvm_heap_used_bytes"):
        assert name in panel
