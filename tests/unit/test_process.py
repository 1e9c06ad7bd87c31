"""Process supervision with real (tiny) processes: no orphans, and never a stranger's pid."""

import subprocess
import sys
import time

import pytest

from ops.stack.process import Service, ServiceError, Supervisor, _alive


def sleeper(name="sleeper", child=False):
    code = "import subprocess, sys, time\n"
    if child:  # a child in the same process group, like Spark's JVM under the sink
        code += "subprocess.Popen([sys.executable, '-c', 'import time; time.sleep(60)'])\n"
    code += "time.sleep(60)"
    return Service(name, [sys.executable, "-c", code], health=lambda: True)


def children_of(pid):
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True).stdout
    return [int(p) for p in out.split()]


def test_stop_ends_the_service_and_its_children(tmp_path):
    sup = Supervisor(tmp_path)
    sup.start(sleeper(child=True))
    pid = sup.running_pid("sleeper")
    deadline = time.monotonic() + 10
    while not children_of(pid) and time.monotonic() < deadline:
        time.sleep(0.1)
    [child] = children_of(pid)
    assert sup.stop("sleeper", timeout_s=10)
    assert not _alive(pid) and not _alive(child)
    assert not sup.pidfile("sleeper").exists()
    assert sup.stop("sleeper") is False  # nothing left to stop


def test_a_pid_file_of_another_process_is_never_signalled(tmp_path):
    stranger = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        sup = Supervisor(tmp_path)
        sup.run_dir.mkdir(parents=True)
        sup.pidfile("kafka").write_text(f"{stranger.pid} 12345\n")  # a pid reused since we recorded it
        assert sup.running_pid("kafka") is None
        assert sup.stop("kafka") is False
        assert stranger.poll() is None
    finally:
        stranger.kill()
        stranger.wait()


def test_a_service_that_dies_while_starting_is_reported_with_its_log(tmp_path):
    sup = Supervisor(tmp_path)
    svc = Service(
        "broken", [sys.executable, "-c", "print('bad config line 3'); raise SystemExit(2)"], health=lambda: False
    )
    sup.start(svc)
    with pytest.raises(ServiceError, match="broken exited with code 2 while starting") as info:
        sup.wait_healthy(svc)
    assert "bad config line 3" in str(info.value)


def test_a_busy_port_is_a_clear_error(tmp_path):
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen()
        port = sock.getsockname()[1]
        svc = Service("kafka", ["true"], health=lambda: True, ports=[("127.0.0.1", port)])
        with pytest.raises(ServiceError, match=f"port 127.0.0.1:{port} needed by kafka is in use"):
            Supervisor(tmp_path).start(svc)


def test_a_pipeline_restarts_what_dies_and_only_the_user_stops_it(settings, tmp_path):
    from ops.stack.runner import Pipeline

    flag = tmp_path / "crashed-once"
    flaky = Service(
        "router",
        [
            sys.executable,
            "-c",
            f"import pathlib, sys, time\n"
            f"p = pathlib.Path({str(flag)!r})\n"
            f"if not p.exists(): p.touch(); sys.exit(70)\n"
            f"time.sleep(60)",
        ],
        health=flag.exists,
    )
    broken = Service("sink", [sys.executable, "-c", "raise SystemExit(1)"], health=lambda: False)
    pipe = Pipeline(settings.replace(home=str(tmp_path / "home")), apps=False)
    try:
        pipe.started = [flaky, broken]
        for svc in pipe.started:
            pipe.supervisor.start(svc)
        deadline = time.monotonic() + 5
        assert pipe.watch(lambda: time.monotonic() > deadline, interval_s=0.1) == 0  # ran until asked to stop
        assert pipe.supervisor.running_pid("router")  # restarted after its crash, and up
        log = pipe.supervisor.log_path("sink").read_text()
        assert log.count("=== ") >= 3  # the broken one was started again and again, and stopped nothing
    finally:
        pipe.supervisor.stop("router")
        pipe.supervisor.stop("sink")


def test_a_pid_file_of_the_previous_format_still_names_its_process(tmp_path):
    """Pid files written before the runner used psutil hold the start in clock ticks since boot:
    `questlog stop` after an upgrade still finds (and stops) what they name."""
    import os

    import psutil

    sup = Supervisor(tmp_path)
    sup.start(sleeper())
    pid = sup.running_pid("sleeper")
    ticks = round((psutil.Process(pid).create_time() - psutil.boot_time()) * os.sysconf("SC_CLK_TCK"))
    sup.pidfile("sleeper").write_text(f"{pid} {ticks}\n")
    assert sup.recorded_pid("sleeper") == pid
    sup.pidfile("sleeper").write_text(f"{pid} {ticks + 500 * os.sysconf('SC_CLK_TCK')}\n")
    assert sup.recorded_pid("sleeper") is None  # another process that got the same pid
    sup.pidfile("sleeper").write_text(f"{pid} {ticks}\n")
    assert sup.stop("sleeper")
    assert not _alive(pid)


def test_a_process_whose_main_thread_exited_is_alive_until_its_other_threads_end():
    """A JVM on its way out: its main thread is a zombie while the others still hold its sockets."""
    code = (
        "import ctypes, threading, time\n"
        "threading.Thread(target=lambda: time.sleep(2)).start()\n"
        "ctypes.CDLL(None).pthread_exit(None)\n"
    )
    proc = subprocess.Popen([sys.executable, "-c", code])
    try:
        time.sleep(0.7)
        assert proc.poll() is None
        assert _alive(proc.pid)  # the main thread is a zombie, another thread runs
        proc.wait(timeout=10)
        assert not _alive(proc.pid)
    finally:
        proc.kill()


def test_a_log_past_its_bound_is_rotated_while_its_service_writes_on(tmp_path):
    """A real process writing its log (opened as the Supervisor opens it, O_APPEND): rotated, the
    log goes on from its start, the older copy is kept once, and the total stays bounded."""
    import subprocess
    import sys
    import time

    from ops.stack.process import rotate_logs

    log = tmp_path / "svc.log"
    writer = subprocess.Popen(
        [
            sys.executable,
            "-c",
            "import sys, time\nfor i in range(10**9):\n print(f'line {i} ' + 'x' * 200, flush=True)\n time.sleep(0.0005)",
        ],
        stdout=open(log, "ab"),
        stderr=subprocess.STDOUT,
    )
    try:
        bound = 200_000
        sizes = []
        for _ in range(20):
            time.sleep(0.1)
            rotate_logs(tmp_path, bound)
            sizes.append(
                log.stat().st_size + (tmp_path / "svc.log.1").stat().st_size
                if (tmp_path / "svc.log.1").exists()
                else log.stat().st_size
            )
        assert (tmp_path / "svc.log.1").exists()
        time.sleep(0.2)
        head = log.read_bytes()[:100]
        assert head.startswith(b"line ") and b"\0" not in head  # written from the start again, no hole
        assert max(sizes) < 2 * bound + 400_000, sizes  # a log, its copy and what 0.1 s adds
        assert rotate_logs(tmp_path, 10**9) == []
    finally:
        writer.kill()
        writer.wait()
