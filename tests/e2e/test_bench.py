"""`make bench` at a tiny size against the session's pipeline: every case runs through the real
stack and leaves its row, the results file and the plots. Speed is not asserted: only that each
figure was measured."""

import json

import pytest

from benchmarks import harness, report

pytestmark = pytest.mark.e2e


def test_every_case_runs_and_writes_its_row_the_results_and_the_plots(pipeline, tmp_path):
    out = tmp_path / "results"
    results = harness.run(list(harness.CASES), "tiny", out, pipeline=pipeline, command="pytest")

    assert results == out / "latest.md"
    data = json.loads((out / "latest.json").read_text())
    failed = [r for r in data["rows"] if "FAILED" in r["measure"] or "SKIPPED" in r["measure"]]
    assert not failed, failed
    assert {r["case"] for r in data["rows"]} == {harness.NAMES[c] for c in harness.CASES}

    # Each stage was measured beside its baseline, and both moved data.
    measured = {(t["stage"], t["baseline_name"]) for t in data["throughput"]}
    assert measured >= {
        ("collector", "seed collector"),
        ("collector", "do-nothing Flask (gunicorn 2x8)"),
        ("router", "do-nothing Faust agent"),
        ("sink", "minimal Spark job into Iceberg"),
    }
    assert all(t["ours"] > 0 and t["baseline"] > 0 for t in data["throughput"]), data["throughput"]
    # Probes went HTTP in, Trino out.
    (e2e,) = data["latency"]
    assert e2e["probes"] >= 3 and e2e["landed"] >= 1 and all(x > 0 for x in e2e["latencies"])
    # Memory of every service of the pipeline, and of what the cases started beside it.
    peaks = {name for name, series in data["rss"]["series"].items() if series}
    assert {"kafka", "namenode", "datanode", "trino", "collector", "router", "sink"} <= peaks
    assert {
        "seed collector (baseline)",
        "minimal Spark sink (baseline)",
        "minimal Spark sink into Iceberg (baseline)",
        "sink (Questlog, sink case)",
    } <= peaks
    assert {
        "do-nothing Faust agent (baseline, client batches, 2 workers) #1",
        "aiokafka passthrough (baseline, client batches, 2 workers) #2",
        "router (Questlog, router case, client batches, half invalid, 2 workers) #2",
    } <= peaks

    text = results.read_text()
    assert report.table(data) in text
    for png in ("throughput.png", "latency.png", "rss.png"):
        blob = (out / png).read_bytes()
        assert blob[:8] == b"\x89PNG\r\n\x1a\n" and len(blob) > 10_000, png
        assert f"]({png})" in text
