"""Each stage's GET /metrics on the real pipeline parses with prometheus_client's parser and
names every series the Grafana dashboard reads from that stage."""

from __future__ import annotations

import uuid

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families

from tests.helpers import wait_for
from tests.unit.test_dashboard import STAGE_PREFIXES, dashboard_series

pytestmark = pytest.mark.integration


def series(url: str) -> set[str]:
    response = requests.get(url, timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain")
    return {s.name for family in text_string_to_metric_families(response.text) for s in family.samples}


def test_every_stage_serves_the_series_the_dashboard_reads(live_settings):
    s = live_settings
    run = uuid.uuid4().hex[:8]
    events = [{"event_type": "level_up", "level": 2, "character_class": f"c-{run}"},
              {"event_type": "purchase_sword", "sword_type": "katana", "price": "free"}]  # a dead letter
    response = requests.post(f"{s.collector_url}/events", json=events, timeout=30)
    assert 200 <= response.status_code < 300, response.text
    urls = {"collector": f"{s.collector_url}/metrics", "router": s.router_metrics_url, "sink": s.sink_metrics_url}
    wanted = dashboard_series()
    for stage, url in urls.items():
        want = {name for name in wanted if name.startswith(STAGE_PREFIXES[stage])}
        assert want, stage
        # Labelled counters appear once they count something: wait for the events to get there.
        got = wait_for(lambda: (lambda have: have if want <= have else None)(series(url)), timeout_s=120,
                       interval_s=2, what=f"{stage}'s /metrics to name {sorted(want)}")
        assert want <= got
    router = {(s.name, tuple(sorted(s.labels.items()))): s.value
              for f in text_string_to_metric_families(requests.get(urls["router"], timeout=10).text)
              for s in f.samples}
    assert router[("questlog_router_dead_letters_total", (("reason_class", "wrong type"),))] >= 1
    assert router[("questlog_router_events_routed_total", (("event_type", "level_up"),))] >= 1
