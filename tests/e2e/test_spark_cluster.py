"""The sink on a Spark cluster: a standalone master and worker started from pyspark's own classes
(127.0.0.1 only), a second sink on it (`QUESTLOG_SPARK_MASTER=spark://...`, a schema, warehouse and
checkpoint of its own) beside the session's pipeline, and events sent over HTTP landing exactly
once in its tables. About 3 minutes: CI runs it with the rest (`-m spark_cluster` alone)."""

from __future__ import annotations

import sys
import uuid
from pathlib import Path

import pytest
import requests

from ops.stack import services
from ops.stack.java import find_java, java_home
from ops.stack.process import Service, Supervisor, port_open
from tests.helpers import count_when, query, wait_for, webhdfs_list

pytestmark = [pytest.mark.e2e, pytest.mark.spark_cluster]


def free_port(start: int) -> int:
    port = start
    while port_open("127.0.0.1", port):
        port += 1
    return port


def master_state(ui_port: int) -> dict:
    return requests.get(f"http://127.0.0.1:{ui_port}/json/", timeout=5).json()


@pytest.fixture(scope="module")
def spark_cluster(pipeline):
    """A standalone master and one worker (2 cores, 2 GiB), on loopback ports of their own."""
    import pyspark

    home = pipeline.settings.home_path / "spark-cluster"
    supervisor = Supervisor(home)
    spark_class = str(Path(pyspark.__file__).parent / "bin" / "spark-class")
    base = pipeline.settings.trino_port + 100  # beside the test stack's ports
    port, ui, worker_ui = free_port(base), free_port(base + 10), free_port(base + 20)
    env = {
        "JAVA_HOME": java_home(find_java(17, 21, purpose="Spark")),
        "SPARK_LOCAL_IP": "127.0.0.1",
        "SPARK_HOME": str(Path(pyspark.__file__).parent),
        "PYSPARK_PYTHON": sys.executable,
        "SPARK_LOG_DIR": str(home / "logs"),
        "SPARK_WORKER_DIR": str(home / "work"),
    }
    master = Service(
        "spark-master",
        [
            spark_class,
            "org.apache.spark.deploy.master.Master",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--webui-port",
            str(ui),
        ],
        lambda: master_state(ui).get("status") == "ALIVE",
        env=env,
        ports=[("127.0.0.1", port)],
    )
    url = f"spark://127.0.0.1:{port}"
    worker = Service(
        "spark-worker",
        [
            spark_class,
            "org.apache.spark.deploy.worker.Worker",
            "--host",
            "127.0.0.1",
            "--cores",
            "2",
            "--memory",
            "2g",
            "--webui-port",
            str(worker_ui),
            "--work-dir",
            str(home / "work"),
            url,
        ],
        lambda: len([w for w in master_state(ui)["workers"] if w["state"] == "ALIVE"]) == 1,
        env=env,
    )
    try:
        for svc in (master, worker):
            supervisor.start(svc)
            supervisor.wait_healthy(svc)
        yield url, ui
    finally:
        for name in ("spark-worker", "spark-master"):
            supervisor.stop(name, timeout_s=20)


@pytest.fixture(scope="module")
def cluster_sink(pipeline, spark_cluster):
    """A second sink, on the cluster, over the same typed topics; its own tables."""
    url, ui = spark_cluster
    run = uuid.uuid4().hex[:6]
    home = pipeline.settings.home_path / f"cluster-sink-{run}"
    settings = pipeline.settings.replace(
        home=str(home),
        catalog_db_password_file=str(pipeline.settings.catalog_db_password_path),  # the stack's catalog
        kafka_password_file=str(pipeline.settings.kafka_password_path),  # and its Kafka's users
        trino_ca=pipeline.settings.trino_ca_file or "",  # and its Trino's
        trino_password_file=str(pipeline.settings.trino_secrets_dir / pipeline.settings.trino_user),
        spark_master=url,
        trino_schema=f"cluster_{run}",
        warehouse_dir=f"/questlog/cluster-{run}/warehouse",
        checkpoint_dir=f"/questlog/cluster-{run}/checkpoints",
    )
    supervisor = Supervisor(home)
    svc = services.sink(settings)
    try:
        supervisor.start(svc)
        supervisor.wait_healthy(svc)
        yield settings
    finally:
        supervisor.stop("sink", timeout_s=30)


def test_the_sink_on_a_standalone_cluster_lands_every_event_once(cluster_sink, spark_cluster):
    settings = cluster_sink
    _, ui = spark_cluster
    host = f"cluster.{uuid.uuid4().hex[:8]}.example"
    events = [{"event_type": "purchase_sword", "event_id": f"{host}-{i}", "price": float(i)} for i in range(20)]
    for body in (events, events[:5]):  # a client retrying the first five
        response = requests.post(f"{settings.collector_url}/events", json=body, headers={"Host": host}, timeout=10)
        assert response.status_code == 202, response.text
    bad_id = f"bad-{uuid.uuid4()}"
    response = requests.post(
        f"{settings.collector_url}/events",
        headers={"Host": host},
        timeout=10,
        json={"event_type": "purchase_sword", "event_id": bad_id, "price": "a lot"},
    )
    assert response.status_code == 202, response.text

    # The sink really runs on the cluster: its executors are the worker's.
    apps = master_state(ui)["activeapps"]
    assert [a["name"] for a in apps] == ["questlog-sink"], apps

    sql = f"SELECT count(*), count(DISTINCT event_id), sum(price) FROM sword_purchases WHERE host = '{host}'"
    assert count_when(settings, f"SELECT count(*) FROM sword_purchases WHERE host = '{host}'", 20, 240) == 20
    assert query(settings, sql) == [[20, 20, float(sum(range(20)))]]
    letters = wait_for(
        lambda: query(settings, f"SELECT reason FROM dead_letters WHERE event_id = '{bad_id}'"),
        timeout_s=120,
        what="the dead letter in the cluster sink's table",
    )
    assert letters == [["field 'price': expected double, got string 'a lot'"]]
    # the executors wrote the Iceberg table's data files under its location, by date
    dates = webhdfs_list(settings, f"{settings.warehouse_dir}/{settings.trino_schema}/sword_purchases/data")
    assert [d["pathSuffix"] for d in dates if d["pathSuffix"].startswith("dt=")], dates
