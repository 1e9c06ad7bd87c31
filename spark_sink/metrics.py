"""The sink's Prometheus metrics, served at GET /metrics on QUESTLOG_SINK_METRICS_BIND.

`serve(spark, settings)` starts a small HTTP server thread (prometheus_client's) and registers a
StreamingQueryListener: each micro-batch's progress gives its duration, the input rate beside the
processing rate, and the lag (the latest offsets Spark saw on each typed topic minus the end
offsets of the batch). `landed` counts rows per table after a batch committed them, `files` the
data files its commits added. Freshness per table is the time since the table last got rows.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Mapping
from functools import partial
from typing import Any

import prometheus_client as prom

from questlog.settings import Settings, split_address

log = logging.getLogger(__name__)

BATCH_SECONDS = prom.Histogram(
    "questlog_sink_batch_seconds",
    "Duration of one micro-batch (Spark's triggerExecution).",
    buckets=(0.25, 0.5, 1, 2, 5, 10, 20, 30, 60, 120, 300),
)
INPUT_ROWS = prom.Counter("questlog_sink_input_rows_total", "Kafka records read by the sink's micro-batches.")
INPUT_RATE = prom.Gauge(
    "questlog_sink_input_rows_per_second",
    "Records per second arriving on the typed topics (Spark's inputRowsPerSecond, last batch).",
)
PROCESSED_RATE = prom.Gauge(
    "questlog_sink_processed_rows_per_second",
    "Records per second the sink processed (Spark's processedRowsPerSecond, last batch).",
)
ROWS = prom.Counter(
    "questlog_sink_rows_written_total", "Rows committed to the Iceberg tables, by table (after dedupe).", ["table"]
)
REPEATS = prom.Counter(
    "questlog_sink_repeats_dropped_total",
    "Records dropped as repeats of a record already landed (client retries, router re-deliveries, replays).",
)
INDEX_SECONDS = prom.Histogram(
    "questlog_sink_dedupe_seconds",
    "Time a batch spent in the dedupe index (look-up and write of its keys).",
    buckets=(0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2, 5),
)
FILES = prom.Counter(
    "questlog_sink_files_written_total", "Parquet data files the sink's commits added, by table.", ["table"]
)
LAG = prom.Gauge(
    "questlog_sink_lag_records",
    "Records on a typed topic not read yet: Kafka's latest offsets minus the last batch's end.",
    ["topic"],
)
LAST_LANDED = prom.Gauge(
    "questlog_sink_last_landed_timestamp_seconds", "When the table last got rows (Unix time).", ["table"]
)
FRESHNESS = prom.Gauge("questlog_sink_freshness_seconds", "Seconds since the table last got rows.", ["table"])
QUERIES_ACTIVE = prom.Gauge(
    "questlog_sink_queries_active",
    "Streaming queries running in the sink (1 once its query started; `questlog status` calls the sink healthy then).",
)
JVM_HEAP = prom.Gauge("questlog_sink_jvm_heap_used_bytes", "Heap used by the Spark driver's JVM.")
JVM_HEAP_MAX = prom.Gauge("questlog_sink_jvm_heap_max_bytes", "The Spark driver JVM's maximum heap.")

_last_landed: dict[str, float] = {}


def _age(table: str) -> float:
    return time.time() - _last_landed[table]


_lock = threading.Lock()


def _offsets(value: Any) -> dict[str, dict[str, int]]:
    """A source's offsets, as Spark's progress gives them (a JSON string or already a dict)."""
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except ValueError:
            return {}
    return value if isinstance(value, dict) else {}


def observe(progress: Mapping[str, Any]) -> None:
    """Update the gauges and counters from one micro-batch's progress (StreamingQueryProgress JSON)."""
    took = (progress.get("durationMs") or {}).get("triggerExecution")
    if took is not None:
        BATCH_SECONDS.observe(took / 1000.0)
    INPUT_ROWS.inc(progress.get("numInputRows") or 0)
    INPUT_RATE.set(progress.get("inputRowsPerSecond") or 0.0)
    PROCESSED_RATE.set(progress.get("processedRowsPerSecond") or 0.0)
    for source in progress.get("sources") or []:
        end, latest = _offsets(source.get("endOffset")), _offsets(source.get("latestOffset"))
        for topic, parts in latest.items():
            behind = sum(max(0, int(o) - int(end.get(topic, {}).get(p, 0))) for p, o in parts.items())
            LAG.labels(topic).set(behind)


def landed(rows: Mapping[str, int], now: float | None = None) -> None:
    """Count the rows a batch landed, per table name."""
    now = time.time() if now is None else now
    for table, n in rows.items():
        if n <= 0:
            continue
        ROWS.labels(table).inc(n)
        LAST_LANDED.labels(table).set(now)
        with _lock:
            if table not in _last_landed:
                FRESHNESS.labels(table).set_function(partial(_age, table))
            _last_landed[table] = now


def _listener_class():
    from pyspark.sql.streaming import StreamingQueryListener

    class ProgressListener(StreamingQueryListener):
        def onQueryStarted(self, event) -> None:
            QUERIES_ACTIVE.inc()

        def onQueryProgress(self, event) -> None:
            try:
                observe(json.loads(event.progress.json))
            except Exception as exc:
                log.warning("could not read a batch's progress: %r", exc)

        def onQueryIdle(self, event) -> None:
            pass

        def onQueryTerminated(self, event) -> None:
            QUERIES_ACTIVE.dec()

    return ProgressListener


def serve(spark, settings: Settings) -> None:
    """Listen to the streaming queries' progress and serve /metrics; a port in use is logged,
    never a reason for the sink to stop."""
    spark.streams.addListener(_listener_class()())
    runtime = spark.sparkContext._jvm.java.lang.Runtime.getRuntime()
    JVM_HEAP.set_function(lambda: runtime.totalMemory() - runtime.freeMemory())
    JVM_HEAP_MAX.set_function(lambda: runtime.maxMemory())
    host, port = split_address(settings.sink_metrics_bind)
    try:
        prom.start_http_server(port, addr=host)
    except OSError as exc:
        log.warning("not serving metrics on %s: %s", settings.sink_metrics_bind, exc)
        return
    log.info("metrics at %s", settings.sink_metrics_url)
