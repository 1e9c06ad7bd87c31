"""The runner's watchdog with real processes: a service that keeps failing is restarted with a
growing backoff and never stops the others; a long healthy period resets its backoff; a service
waits for what it depends on."""

import itertools
import sys
import time

import pytest

from ops.stack.process import Service, Supervisor
from ops.stack.runner import Watchdog

SLEEPER = [sys.executable, "-c", "import time; time.sleep(120)"]
FAILER = [sys.executable, "-c", "import sys; sys.exit(3)"]


@pytest.fixture
def supervisor(tmp_path):
    sup = Supervisor(tmp_path)
    yield sup
    for name in list(sup.procs):
        sup.stop(name, timeout_s=5)


def fast(dog):
    dog.BACKOFF_FIRST_S, dog.BACKOFF_CAP_S, dog.HEALTHY_RESET_S = 0.2, 0.8, 1.0
    return dog


def run(dog, seconds, until=lambda: False):
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline and not until():
        dog.check()
        time.sleep(0.05)


def test_a_service_that_keeps_failing_is_restarted_with_backoff_and_never_stops_the_rest(supervisor):
    steady = Service("steady", SLEEPER, health=lambda: True)
    failing = Service("failing", FAILER, health=lambda: False)
    for svc in (steady, failing):
        supervisor.start(svc)
    steady_pid = supervisor.running_pid("steady")
    dog = fast(Watchdog(supervisor, [steady, failing]))
    starts = []
    original_start = supervisor.start

    def recording_start(svc):
        starts.append((svc.name, time.monotonic()))
        original_start(svc)

    supervisor.start = recording_start
    run(dog, 4.0)
    times = [t for name, t in starts if name == "failing"]
    assert len(times) >= 4, starts  # restarted again and again, never given up
    gaps = [b - a for a, b in itertools.pairwise(times)]
    assert gaps[0] < gaps[-1]  # backing off
    assert max(gaps) < 0.8 + 0.5  # up to the cap
    assert supervisor.running_pid("steady") == steady_pid  # the others untouched
    assert dog.state["steady"] == "up"


def test_a_long_healthy_period_resets_the_backoff(supervisor):
    svc = Service("flaky", SLEEPER, health=lambda: True)
    supervisor.start(svc)
    dog = fast(Watchdog(supervisor, [svc]))
    for _ in range(3):  # three quick deaths: the backoff grows
        supervisor.procs["flaky"].kill()
        supervisor.procs["flaky"].wait()
        run(dog, 3.0, until=lambda: dog.state["flaky"] == "up" and supervisor.running_pid("flaky"))
    assert dog.deaths["flaky"] == 3 and dog.backoff("flaky") == 0.8
    run(dog, 1.5)  # healthy for longer than HEALTHY_RESET_S
    assert dog.deaths["flaky"] == 0 and dog.backoff("flaky") == 0.2
    assert dog.restarts["flaky"] == 3


def test_a_service_waits_for_what_it_depends_on(supervisor, tmp_path):
    kafka_ready = tmp_path / "kafka-ready"
    kafka = Service("kafka", SLEEPER, health=kafka_ready.exists)
    router = Service("router", SLEEPER, health=lambda: True)
    for svc in (kafka, router):
        supervisor.start(svc)
    dog = fast(Watchdog(supervisor, [kafka, router]))
    for name in ("kafka", "router"):
        supervisor.procs[name].kill()
        supervisor.procs[name].wait()
    run(dog, 1.5)
    assert dog.state["kafka"] == "starting"  # restarted, not healthy yet
    assert dog.state["router"] == "waiting" and dog.restarts["router"] == 0  # held back
    kafka_ready.touch()
    run(dog, 3.0, until=lambda: dog.state["router"] == "up")
    assert dog.state == {"kafka": "up", "router": "up"}


def test_a_dependency_that_is_up_but_unhealthy_holds_a_restart_back(supervisor, tmp_path):
    writable = tmp_path / "hdfs-writable"  # a NameNode back but in safe mode: running, not healthy
    datanode = Service("datanode", SLEEPER, health=writable.exists)
    sink = Service("sink", SLEEPER, health=lambda: True)
    for svc in (datanode, sink):
        supervisor.start(svc)
    dog = fast(Watchdog(supervisor, [datanode, sink]))
    dog.DEPENDS = {"sink": ("datanode",)}
    supervisor.procs["sink"].kill()
    supervisor.procs["sink"].wait()
    run(dog, 1.5)
    assert dog.state == {"datanode": "up", "sink": "waiting"} and dog.restarts["sink"] == 0
    assert dog.deaths["sink"] == 1  # waiting is not dying again: the backoff does not grow
    writable.touch()
    run(dog, 3.0, until=lambda: dog.state["sink"] == "up")
    assert dog.state["sink"] == "up" and dog.restarts["sink"] == 1
