"""Nothing the running stack listens on is reachable from another machine: every listening socket of
every process of every service (children included) is on 127.0.0.1."""

import pytest

from ops.stack import services
from ops.stack.process import Supervisor
from tests.listening import listeners

pytestmark = pytest.mark.integration


def test_every_listening_socket_of_the_stack_is_on_loopback(pipeline):
    settings = pipeline.settings
    supervisor = Supervisor(settings.home_path)
    groups = {name: supervisor.running_pid(name) for name in services.STOP_ORDER}
    assert all(groups.values()), f"not running: {[n for n, pid in groups.items() if not pid]}"

    found = listeners(groups)
    print("\nlistening sockets of the test stack:\n" + "\n".join(map(str, found)))

    # The list is the real one: each service's own address is in it.
    expected = {
        ("kafka", settings.kafka_port),
        ("kafka", settings.kafka_controller_port),
        ("namenode", int(settings.hdfs_rpc_address.rsplit(":", 1)[1])),
        ("namenode", int(settings.webhdfs_address.rsplit(":", 1)[1])),
        ("datanode", settings.hdfs_datanode_port),
        ("datanode", settings.hdfs_datanode_port - 2),
        ("datanode", settings.hdfs_datanode_port + 1),
        ("trino", settings.trino_port),
        ("collector", settings.collector_port),
        ("router", settings.router_web_port),
    }
    assert expected <= {(s.service, s.port) for s in found if s.proto == "tcp"}
    assert {s.service for s in found} >= {"sink"}  # Spark's driver and block manager

    exposed = [str(s) for s in found if s.address != "127.0.0.1"]
    assert exposed == [], "listening beyond loopback:\n" + "\n".join(exposed)
