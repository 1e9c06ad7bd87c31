"""Prometheus metrics of the collector, served at GET /metrics.

Under gunicorn each worker is a process: with PROMETHEUS_MULTIPROC_DIR set (the local runner and
compose set it), the workers' counters are summed at scrape time.
"""

from __future__ import annotations

import os

if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):  # must exist before the first metric is made
    os.makedirs(os.environ["PROMETHEUS_MULTIPROC_DIR"], exist_ok=True)

from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, Counter, Histogram, generate_latest

ACCEPTED = Counter("questlog_events_accepted_total", "Events stored on Kafka, by type.", ["event_type"])
REJECTED = Counter("questlog_requests_rejected_total", "Requests answered 4xx/5xx, by status.", ["status"])
PRODUCE_SECONDS = Histogram(
    "questlog_produce_seconds",
    "Time from a request's events to Kafka's confirmation.",
    buckets=(0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
)


def render() -> tuple[bytes, str]:
    if os.environ.get("PROMETHEUS_MULTIPROC_DIR"):
        from prometheus_client import multiprocess

        registry = CollectorRegistry()
        multiprocess.MultiProcessCollector(registry)
        return generate_latest(registry), CONTENT_TYPE_LATEST
    return generate_latest(), CONTENT_TYPE_LATEST
