"""The collector's /metrics sums the counters of every gunicorn worker process."""

import os
import subprocess
import sys

from questlog.settings import REPO_ROOT


def run(code: str, metrics_dir) -> str:
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(metrics_dir), "PYTHONPATH": str(REPO_ROOT)}
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout


def test_counters_of_separate_worker_processes_add_up(tmp_path):
    metrics_dir = tmp_path / "metrics"  # created by the first process that needs it
    for n in (2, 3):  # two workers, each counting its own requests
        run(f"from producer.metrics import ACCEPTED; ACCEPTED.labels('level_up').inc({n})", metrics_dir)
    text = run("from producer.metrics import render; print(render()[0].decode())", metrics_dir)
    assert 'questlog_events_accepted_total{event_type="level_up"} 5.0' in text
