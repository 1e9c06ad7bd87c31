"""Every service of the local stack, described once: what it is called, what it needs, where it
listens, and where its command and health check are built.

Everything that knows the services reads this list: the runner (`ops.stack.runner.Pipeline`: the
waves it starts them in, `stop_all`'s order), its watchdog (what must be healthy before a restart),
`questlog status` (its rows, in this order), the port shift of the test, fault and bench stacks
(each port setting belongs to one service here; `Settings.shifted` moves them all), and the
compose tests (the compose file's services and their `depends_on` agree with `needs`). Adding a
service: one `Spec` here, its builder in `ops/stack/services.py`, its status probe in
`ops/status.py`, and its service in `compose/docker-compose.yml`.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class Spec:
    name: str
    group: str  # "stack": the infrastructure; "pipeline": the stages, started once the stack is up
    builder: str  # the function of ops.stack.services that builds its Service (command, env, health)
    needs: tuple[str, ...] = ()  # healthy before it starts, and before the watchdog restarts it
    ports: tuple[str, ...] = ()  # the Settings fields of the ports it listens on
    probe: str | None = None  # the name of its probe in ops.status.PROBES; None: shown only where it runs locally


SPECS: tuple[Spec, ...] = (
    Spec("kafka", "stack", "kafka", ports=("kafka_bootstrap", "kafka_controller_port"), probe="kafka"),
    Spec("namenode", "stack", "namenode", ports=("hdfs_url", "webhdfs_url"), probe="namenode"),
    Spec("datanode", "stack", "datanode", needs=("namenode",), ports=("hdfs_datanode_port",), probe="namenode"),
    Spec("postgres", "stack", "postgres", ports=("catalog_db_url",), probe="postgres"),
    # Trino starts without PostgreSQL (its Iceberg catalog connects at the first query), so it
    # starts beside it, the slowest of the stack, rather than after it (compose waits: it may)
    Spec("trino", "stack", "trino", ports=("trino_url",), probe="trino"),
    Spec("collector", "pipeline", "collector", needs=("kafka",), ports=("collector_bind",), probe="collector"),
    Spec("router", "pipeline", "router", needs=("kafka",), ports=("router_web_port",), probe="router"),
    Spec(
        "sink",
        "pipeline",
        "sink",
        needs=("kafka", "namenode", "datanode", "postgres"),
        ports=("sink_metrics_bind",),
        probe="sink",
    ),
    Spec("compactor", "pipeline", "compactor", needs=("namenode", "datanode", "postgres", "trino")),
)

BY_NAME = {spec.name: spec for spec in SPECS}
NAMES = tuple(BY_NAME)


def waves(group: str) -> list[list[Spec]]:
    """The services of ``group`` in the order they start: each wave together, once every service
    the wave needs (of this group or an earlier one) is healthy; within a wave, as listed."""
    left = [spec for spec in SPECS if spec.group == group]
    others = {spec.name for spec in SPECS if spec.group != group}  # started in their own group's turn
    done: set[str] = set()
    out = []
    while left:
        ready = [spec for spec in left if set(spec.needs) <= done | others]
        if not ready:
            raise ValueError(f"services that need each other: {', '.join(s.name for s in left)}")
        out.append(ready)
        done |= {spec.name for spec in ready}
        left = [spec for spec in left if spec not in ready]
    return out


def start_order() -> list[str]:
    return [spec.name for group in ("stack", "pipeline") for wave in waves(group) for spec in wave]


STOP_ORDER = tuple(reversed(start_order()))  # what needs others stops first
DEPENDS = {spec.name: spec.needs for spec in SPECS if spec.needs}


def closure(name: str, needs: dict[str, tuple[str, ...]] | None = None) -> set[str]:
    """Everything ``name`` needs, directly or through what it needs."""
    needs = DEPENDS if needs is None else needs
    seen: set[str] = set()
    todo = list(needs.get(name, ()))
    while todo:
        dep = todo.pop()
        if dep not in seen:
            seen.add(dep)
            todo += needs.get(dep, ())
    return seen
