"""The router's and the sink's Prometheus series, without services: the router counts what it
delivered by type and reason class and times its batches; the sink reads Spark's progress
(duration, rates, lag) and counts rows, files and freshness per table."""

from __future__ import annotations

import asyncio
import json
from types import SimpleNamespace

import prometheus_client
from faust.types import TP
from prometheus_client.parser import text_string_to_metric_families

from spark_sink import metrics as sink_metrics
from tests.unit.test_router import event, make_router, records


def value(name: str, **labels) -> float:
    return prometheus_client.REGISTRY.get_sample_value(name, labels or None) or 0.0


def test_the_router_counts_routed_events_by_type_and_dead_letters_by_reason_code(catalog):
    before = (
        value("questlog_router_events_routed_total", event_type="join_guild"),
        value("questlog_router_dead_letters_total", reason_code="not_json"),
        value("questlog_router_dead_letters_total", reason_code="wrong_type"),
    )
    router = make_router(catalog)
    asyncio.run(router.handle(records(event(1), b"not json", event(2), event(3, guild_id=42))))
    after = (
        value("questlog_router_events_routed_total", event_type="join_guild"),
        value("questlog_router_dead_letters_total", reason_code="not_json"),
        value("questlog_router_dead_letters_total", reason_code="wrong_type"),
    )
    assert [a - b for a, b in zip(after, before, strict=True)] == [2, 1, 1]


def test_the_router_lag_is_what_is_left_behind_its_batch(catalog):
    router = make_router(catalog)
    tp = TP("events", 0)
    router.highwater = lambda: {tp: 1000}
    now_ms = 1_800_000_000_000
    batch = [
        SimpleNamespace(message=SimpleNamespace(tp=tp, offset=400 + i, timestamp=(now_ms - 30_000 + i) / 1000))
        for i in range(100)
    ]
    import faust_app.router as module

    original = module.time.time
    module.time.time = lambda: now_ms / 1000
    try:
        router.observe_lag(batch)
    finally:
        module.time.time = original
    assert value("questlog_router_lag_records") == 600  # 1000 - 400: the batch is not routed yet
    assert value("questlog_router_lag_seconds") == 30.0
    router.observe_lag()
    assert value("questlog_router_lag_records") == 500  # after the batch: 1000 - 500
    router.highwater = lambda: {tp: 500}
    router.observe_lag()
    assert value("questlog_router_lag_records") == 0 and value("questlog_router_lag_seconds") == 0  # caught up


PROGRESS = {
    "batchId": 7,
    "numInputRows": 250,
    "inputRowsPerSecond": 125.0,
    "processedRowsPerSecond": 500.0,
    "durationMs": {"triggerExecution": 1500, "addBatch": 1200},
    "sources": [
        {
            "description": "KafkaV2[Subscribe[events.dlq,events.purchase_sword]]",
            "startOffset": {"events.purchase_sword": {"0": 0}, "events.dlq": {"0": 0}},
            "endOffset": {"events.purchase_sword": {"0": 240}, "events.dlq": {"0": 10}},
            "latestOffset": {"events.purchase_sword": {"0": 300}, "events.dlq": {"0": 10}},
            "numInputRows": 250,
        }
    ],
}


def test_the_sink_reads_duration_rates_and_lag_from_sparks_progress():
    rows_before = value("questlog_sink_input_rows_total")
    count_before = value("questlog_sink_batch_seconds_count")
    sink_metrics.observe(json.loads(json.dumps(PROGRESS)))
    assert value("questlog_sink_input_rows_total") - rows_before == 250
    assert value("questlog_sink_batch_seconds_count") - count_before == 1
    assert value("questlog_sink_input_rows_per_second") == 125.0
    assert value("questlog_sink_processed_rows_per_second") == 500.0
    assert value("questlog_sink_lag_records", topic="events.purchase_sword") == 60
    assert value("questlog_sink_lag_records", topic="events.dlq") == 0
    # Spark may give offsets as JSON text
    text = {
        **PROGRESS,
        "sources": [
            {
                **PROGRESS["sources"][0],
                "endOffset": json.dumps(PROGRESS["sources"][0]["endOffset"]),
                "latestOffset": json.dumps({"events.purchase_sword": {"0": 250}}),
            }
        ],
    }
    sink_metrics.observe(text)
    assert value("questlog_sink_lag_records", topic="events.purchase_sword") == 10


def test_the_sink_counts_rows_per_table_and_serves_freshness():
    before = value("questlog_sink_rows_written_total", table="guild_joins")
    sink_metrics.landed({"guild_joins": 12, "level_ups": 0}, now=1_000.0)
    assert value("questlog_sink_rows_written_total", table="guild_joins") - before == 12
    assert value("questlog_sink_last_landed_timestamp_seconds", table="guild_joins") == 1_000.0
    assert value("questlog_sink_freshness_seconds", table="guild_joins") > 1_000_000  # 1970 + 1000 s
    assert value("questlog_sink_freshness_seconds", table="level_ups") == 0.0  # no rows, no series
    page = prometheus_client.generate_latest().decode()
    names = {f.name for f in text_string_to_metric_families(page)}
    assert {"questlog_sink_rows_written", "questlog_sink_freshness_seconds", "questlog_sink_lag_records"} <= names
