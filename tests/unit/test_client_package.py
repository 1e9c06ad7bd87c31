"""The client is a package games can install on its own: `pip install ./questlog_client` into an
empty virtualenv brings only an HTTP client, and importing it loads nothing of the pipeline."""

import json
import os
import shutil
import subprocess
import sys
import tomllib

from questlog.settings import REPO_ROOT

CLIENT = REPO_ROOT / "questlog_client"
PIPELINE = ("pyspark", "faust", "flask", "granian", "confluent_kafka", "aiokafka", "trino", "pyarrow", "questlog")


def test_the_client_declares_only_an_http_client():
    project = tomllib.loads((CLIENT / "pyproject.toml").read_text())["project"]
    assert project["name"] == "questlog-client"
    assert [dep.split(">")[0] for dep in project["dependencies"]] == ["requests"]


def test_the_client_installs_and_runs_in_an_empty_virtualenv(tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True, timeout=120)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PYTHON", "VIRTUAL_ENV"))}
    source = shutil.copytree(CLIENT, tmp_path / "questlog_client", ignore=shutil.ignore_patterns("__pycache__"))
    subprocess.run(  # from a copy: pip builds in the source tree
        [str(venv / "bin" / "pip"), "install", "-q", "--disable-pip-version-check", str(source)],
        check=True,
        timeout=300,
        env=env,
        cwd=tmp_path,
    )
    probe = (
        "import json, sys, questlog_client\n"
        "t = questlog_client.Tracker('http://127.0.0.1:9', catalog='auto')\n"
        "t.track('purchase_sword', price=1.0)\n"
        "t.close(timeout_s=0.1)\n"
        "print(json.dumps(sorted({m.split('.')[0] for m in sys.modules})))\n"
    )
    out = subprocess.run(
        [str(venv / "bin" / "python"), "-c", probe],
        check=True,
        timeout=60,
        env=env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
    ).stdout
    loaded = set(json.loads(out.splitlines()[-1]))
    assert "questlog_client" in loaded and "requests" in loaded
    assert not loaded & set(PIPELINE), loaded & set(PIPELINE)
    installed = subprocess.run(
        [str(venv / "bin" / "pip"), "list", "--format=json", "--disable-pip-version-check"],
        check=True,
        env=env,
        capture_output=True,
        text=True,
    ).stdout
    names = {p["name"].lower() for p in json.loads(installed)}
    assert "questlog-client" in names
    assert not names & {"pyspark", "faust-streaming", "flask", "confluent-kafka", "questlog"}, names
