"""How far behind the running pipeline is: the router's group against the raw topic, the sink's
checkpoint (read over WebHDFS) against the typed topics."""

from __future__ import annotations

import json
import time

import requests
from confluent_kafka import ConsumerGroupTopicPartitions, TopicPartition
from confluent_kafka.admin import AdminClient

from benchmarks.kafka_util import Offsets
from ops.stack import services
from ops.stack.runner import Pipeline
from questlog.catalog import load_catalog
from questlog.settings import Settings


def sink_topics(settings: Settings) -> list[str]:
    return [t.topic for t in load_catalog(settings.catalog).tables(settings.raw_topic, settings.dlq_topic)]


def sink_checkpoint(settings: Settings) -> dict[str, int]:
    """Offsets per topic (summed over partitions) up to which the sink's last committed batch read."""
    base = f"{settings.webhdfs_url}/webhdfs/v1{settings.sink_checkpoint_dir}"
    listing = requests.get(f"{base}/commits", params={"op": "LISTSTATUS"}, timeout=10)
    if listing.status_code == 404:
        return {}
    listing.raise_for_status()
    batches = [int(f["pathSuffix"]) for f in listing.json()["FileStatuses"]["FileStatus"] if f["pathSuffix"].isdigit()]
    if not batches:
        return {}
    text = requests.get(f"{base}/offsets/{max(batches)}", params={"op": "OPEN"}, timeout=10).text
    offsets = json.loads(text.strip().splitlines()[-1])
    return {topic: sum(parts.values()) for topic, parts in offsets.items()}


def lags(settings: Settings, offsets: Offsets) -> dict[str, int | None]:
    router = offsets.lag(settings.router_id, settings.raw_topic)
    try:
        done = sink_checkpoint(settings)
        sink = sum(max(0, offsets.end_total([t]) - done.get(t, 0)) for t in sink_topics(settings))
    except (requests.RequestException, ValueError, KeyError):
        sink = None
    return {"router": router, "sink": sink}


def settle(pipeline: Pipeline, offsets: Offsets, cap_s: float, say) -> int:
    """Let the pipeline's router drain what earlier cases sent, for at most ``cap_s``; then skip the
    rest (stop the router, move its group's offsets to the end, start it again) so that the next
    case starts from an empty backlog. Returns how many raw events were skipped."""
    s = pipeline.settings
    deadline = time.monotonic() + cap_s
    while time.monotonic() < deadline:
        if offsets.lag(s.router_id, s.raw_topic) == 0:
            return 0
        time.sleep(0.5)
    lag = offsets.lag(s.router_id, s.raw_topic)
    say(f"the router is {lag:,} raw events behind after {cap_s:.0f} s: skipping them")
    pipeline.supervisor.stop("router")
    end = offsets.end(s.raw_topic)
    admin = AdminClient(s.kafka_client())
    request = [ConsumerGroupTopicPartitions(s.router_id, [TopicPartition(s.raw_topic, p, o) for p, o in end.items()])]
    for attempt in range(60):  # the group must be empty: a stopped member leaves it at once or times out
        try:
            admin.alter_consumer_group_offsets(request)[s.router_id].result(timeout=10)
            break
        except Exception:
            if attempt == 59:
                raise
            time.sleep(0.5)
    svc = services.router(s)
    pipeline.supervisor.start(svc)
    pipeline.supervisor.wait_healthy(svc)
    return lag
