"""The services' warnings on the terminal of `questlog run` (ops.stack.logecho): lines as each
service writes them (copied from a real run's logs), WARN and above echoed with the service's name,
the rest (INFO, librdkafka's chatter, stack traces, start-up boilerplate) not, and a storm held to
a few lines with a count of the rest."""

from __future__ import annotations

import io

import pytest

from ops.stack import logecho
from ops.stack.logecho import LogEcho

WARNINGS = [
    (
        "kafka",
        "[2026-11-30 00:05:44,285] WARN [RaftManager id=1] Connection to node 1 (127.0.0.1/127.0.0.1:19093) "
        "could not be established. Node may not be available. (org.apache.kafka.clients.NetworkClient)",
    ),
    (
        "namenode",
        "2026-11-30 00:05:18,087 WARN namenode.FSNamesystem: Low on available disk space. Already in safe mode.",
    ),
    ("datanode", "2026-11-30 00:05:42,449 ERROR datanode.DataNode: Exception in BPOfferService"),
    (
        "trino",
        "2026-11-30T00:05:29.347Z\tERROR\tSplitRunner-3\tio.trino.execution.executor.timesharing."
        "TimeSharingTaskExecutor\tError processing Split 20261130_000529_00003_abcde.1.0.0-0",
    ),
    (
        "router",
        "[2026-11-30 00:05:44,412] [6561] [ERROR] [^Worker]: Error: KafkaConnectionError('Unable to "
        "bootstrap from [(127.0.0.1, 14092)]')",
    ),
    ("collector", "2026-11-30 00:01:25,134 WARNING producer.routes: Kafka did not confirm 12 events within 10.0s"),
    ("sink", "26/11/30 00:05:48 WARN TaskSetManager: Lost task 0.0 in stage 3.0 (TID 7): FetchFailed"),
    ("sink", "2026-11-30 00:06:01,002 ERROR spark_sink: batch 12 failed: Py4JJavaError"),
]
NOT_SHOWN = [
    ("kafka", "[2026-11-30 00:05:17,804] INFO [QuorumController id=1] Becoming the active controller (org.apache)"),
    ("collector", "%6|1764460000.123|BGQUEUE|rdkafka#producer-1| [thrd:app]: Purging queue with 0 events"),
    ("collector", "%7|1764460000.123|SEND|rdkafka#producer-1| [thrd:127.0.0.1:9092/1]: Sent MetadataRequest"),
    ("collector", "[INFO] Spawning worker-1 with PID: 31402"),
    ("router", "[2026-11-30 00:05:44,285] [6561] [INFO] [^Worker]: Starting..."),
    ("trino", "2026-11-30T00:05:29.347Z\tINFO\tmain\tio.trino.server.Server\t======== SERVER STARTED ========"),
    ("sink", "\tat org.apache.spark.scheduler.DAGScheduler.failJobAndIndependentStages(DAGScheduler.scala:2898)"),
    ("sink", "java.io.IOException: ERROR in the message of a continuation line"),
    ("namenode", "2026-11-30 00:05:18,087 INFO namenode.NameNode: this INFO line mentions an ERROR later on"),
    # start-up boilerplate (QUIET), as written at every start
    (
        "namenode",
        "2026-11-30 00:05:18,087 WARN util.NativeCodeLoader: Unable to load native-hadoop library for "
        "your platform... using builtin-java classes where applicable",
    ),
    ("trino", "WARNING: A terminally deprecated method in sun.misc.Unsafe has been called"),
    (
        "trino",
        "2026-11-30T00:05:29.347Z\tWARN\tquery-management-0\tio.trino.memory.RemoteNodeMemory\tMemory info "
        "update request to http://127.0.0.1:13080/v1/memory has not returned in 11079.52s",
    ),
    (
        "sink",
        "26/11/30 00:12:53 WARN ResolveWriteToStream: spark.sql.adaptive.enabled is not supported in streaming "
        "DataFrames/Datasets and will be disabled.",
    ),
    ("collector", "[WARNING] Configuration allows spawning up to 8 Python threads, which seems quite high"),
    (
        "collector",
        "2026-11-30 00:01:25,134 WARNING producer.writer.librdkafka: GETPID [questlog-collector#producer-1] "
        "[thrd:main]: Failed to acquire idempotence PID from broker 127.0.0.1:14092/1: Broker: "
        "Coordinator load in progress: retrying",
    ),
    ("router", "[2026-11-30 00:05:44,412] [6561] [WARNING] Marking the coordinator dead (node 1)for group q."),
]


@pytest.mark.parametrize("service, line", WARNINGS)
def test_warnings_and_errors_are_shown(service, line):
    assert logecho.shown(line)


@pytest.mark.parametrize("service, line", NOT_SHOWN)
def test_info_chatter_continuations_and_boilerplate_are_not(service, line):
    assert not logecho.shown(line)


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_new_lines_of_each_log_are_echoed_with_the_service_name(tmp_path):
    (tmp_path / "kafka.log").write_text("[2026-11-30 00:00:00,000] WARN from an earlier run (x)\n")
    out, clock = io.StringIO(), Clock()
    echo = LogEcho(tmp_path, ["kafka", "router", "sink"], out=out, clock=clock)
    with open(tmp_path / "kafka.log", "a") as f:
        f.write("\n".join(line for svc, line in WARNINGS + NOT_SHOWN if svc == "kafka") + "\n")
    (tmp_path / "router.log").write_text(
        "\n".join(line for svc, line in WARNINGS + NOT_SHOWN if svc == "router")
        + "\n[2026-11-30 00:05:45,000] [6561] [WARNING] half a li"
    )
    echo.poll()
    lines = out.getvalue().splitlines()
    assert lines == [f"    kafka | {WARNINGS[0][1]}", f"   router | {WARNINGS[4][1]}"]
    with open(tmp_path / "router.log", "a") as f:
        f.write("ne, finished now\n")
    echo.poll()
    assert (
        out.getvalue().splitlines()[-1]
        == "   router | [2026-11-30 00:05:45,000] [6561] [WARNING] half a line, finished now"
    )


def test_a_storm_is_held_to_a_few_lines_and_counted(tmp_path):
    out, clock = io.StringIO(), Clock()
    echo = LogEcho(tmp_path, ["collector"], out=out, clock=clock)
    storm = [f"2026-11-30 00:01:{i % 60:02d},000 WARNING producer.routes: Kafka is away ({i})" for i in range(500)]
    (tmp_path / "collector.log").write_text("\n".join(storm) + "\n")
    echo.poll()
    assert len(out.getvalue().splitlines()) == logecho.BURST
    clock.now += logecho.WINDOW_S
    echo.poll()
    last = out.getvalue().splitlines()[-1]
    assert last.startswith(f"questlog: collector: {500 - logecho.BURST} more warning line(s)")
    assert str(tmp_path / "collector.log") in last
