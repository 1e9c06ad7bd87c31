"""Fixtures shared by every test: the catalog, settings, and (for integration and end-to-end
tests) one real pipeline per test session on ports of its own, so `make test` can run beside
`make run`."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import pytest

from questlog.catalog import DEPLOYED_CATALOG, SCHEMA_DIR, load_catalog
from questlog.settings import REPO_ROOT, Settings

# The test stack's addresses: the local defaults shifted by 10000. QUESTLOG_TEST_PORT_OFFSET and
# QUESTLOG_TEST_HOME let two test runs (two checkouts, two developers) share one machine.
OFFSET = int(os.environ.get("QUESTLOG_TEST_PORT_OFFSET") or 10000)
TEST_HOME = Path(os.environ.get("QUESTLOG_TEST_HOME") or REPO_ROOT / ".questlog-test")

TEST_OVERRIDES = dict(
    kafka_bootstrap=f"127.0.0.1:{9092 + OFFSET}",
    kafka_controller_port=9093 + OFFSET,
    collector_bind=f"127.0.0.1:{5000 + OFFSET}",
    router_web_port=6066 + OFFSET,
    router_id="questlog-router-test",
    hdfs_url=f"hdfs://127.0.0.1:{8020 + OFFSET}",
    webhdfs_url=f"http://127.0.0.1:{9870 + OFFSET}",
    hdfs_datanode_port=9866 + OFFSET,
    trino_url=f"http://127.0.0.1:{8080 + OFFSET}",
    sink_metrics_bind=f"127.0.0.1:{6070 + OFFSET}",
    catalog_db_url=f"postgresql://questlog@127.0.0.1:{5433 + OFFSET}/questlog",
    sink_trigger_s=2.0,
    # the compactor service looks once at start, then tests compact on their own
    compact_interval_s=3600.0,
)


@pytest.fixture(scope="session")
def catalog():
    return load_catalog()


@pytest.fixture(scope="session")
def settings(tmp_path_factory):
    """Settings for tests that start no services (a private home, the shared download cache)."""
    return Settings.from_env(
        {},
        home=str(tmp_path_factory.mktemp("home")),
        cache=os.environ.get("QUESTLOG_CACHE", str(Path.home() / ".cache" / "questlog")),
    )


@pytest.fixture(scope="session")
def pipeline(request):
    """The whole pipeline (Kafka, HDFS, Trino, collector, router, sink), started once per session
    by the same code as `make run`, in a fresh QUESTLOG_HOME (`.questlog-test/` or QUESTLOG_TEST_HOME, kept after the
    run for its logs), and stopped at the end."""
    from ops.stack.process import tail
    from ops.stack.runner import Pipeline, stop_all

    home = TEST_HOME
    # The test pipeline runs on its own copy of the deployed catalog: tests deploy changes to it.
    settings = Settings.from_env(home=str(home), catalog=str(home / "catalog.json"), **TEST_OVERRIDES)
    stop_all(settings)  # leftovers of an interrupted earlier run
    shutil.rmtree(home, ignore_errors=True)
    home.mkdir(parents=True)
    shutil.copy(DEPLOYED_CATALOG, settings.catalog)
    pipe = Pipeline(settings)
    try:
        pipe.up()
        yield pipe
    finally:
        pipe.down()
        if request.session.testsfailed:
            for log in sorted((home / "logs").glob("*.log")):
                print(f"\n----- last lines of {log} -----\n{tail(log, 30)}")


@pytest.fixture(scope="session")
def live_settings(pipeline) -> Settings:
    return pipeline.settings


@pytest.fixture(scope="session")
def live_schemas(pipeline) -> Path:
    """Schema sources for the test pipeline's catalog: tests edit them and deploy, in turn."""
    target = pipeline.settings.home_path / "schemas"
    if not target.exists():
        shutil.copytree(SCHEMA_DIR, target)
    return target
