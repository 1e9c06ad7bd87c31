"""Fixtures shared by every test: the catalog, settings, and (for integration and end-to-end
tests) one real pipeline per test session on ports of its own, so `make test` can run beside
`make run`."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from questlog.catalog import DEPLOYED_CATALOG, SCHEMA_DIR, load_catalog
from questlog.settings import REPO_ROOT, Settings, harness_variable

# The test stack: the local defaults shifted by 10000 (Settings.shifted), in .questlog-test/.
# QUESTLOG_TEST_PORT_OFFSET and QUESTLOG_TEST_HOME let two test runs (two checkouts, two developers)
# share one machine.
OFFSET = int(harness_variable("QUESTLOG_TEST_PORT_OFFSET", "10000"))
TEST_HOME = Path(harness_variable("QUESTLOG_TEST_HOME", str(REPO_ROOT / ".questlog-test")))


def stack_settings(home: Path = TEST_HOME) -> Settings:
    """The test stack's settings, whatever this shell exports besides (its cache aside)."""
    return Settings.from_env({}, cache=Settings.from_env().cache).shifted(
        OFFSET,
        home,
        router_id="questlog-router-test",
        sink_trigger_s=2.0,
        # the compactor service looks once at start, then tests compact on their own
        compact_interval_s=3600.0,
        # sessions of idle partitions close by the clock after 2 s, not 10
        session_tick_s=2.0,
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
        cache=Settings.from_env().cache,
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
    settings = stack_settings(home)
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


STACK_TIERS = ("tests/e2e/", "tests/integration/")  # every test of the one shared pipeline


def pytest_xdist_make_scheduler(config, log):
    """`make test` runs pytest on two workers (pytest-xdist, `-n 2 --dist loadgroup`): every test
    of the real pipeline goes to one worker, in order, sharing the session's one stack, while the
    other worker runs the unit tests beside it. A scheduler of our own rather than xdist_group
    marks: pytest-xdist 3.8 groups by rewriting node ids, which pytest 9 no longer reads
    (tests/unit/test_grouping.py runs two workers and checks where each test ran)."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class StackScheduling(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            return "stack" if nodeid.startswith(STACK_TIERS) else nodeid

    return StackScheduling(config, log)
