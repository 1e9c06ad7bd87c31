"""ops/stack/specs.py: one description per service, and everything that knows the services
(runner, watchdog, status, the port shift, compose) reading it."""

import dataclasses

import pytest
import yaml

from ops import status
from ops.stack import runner, services, specs
from questlog.settings import REPO_ROOT, Settings

COMPOSE = yaml.safe_load((REPO_ROOT / "compose" / "docker-compose.yml").read_text())["services"]
# compose waits for more than the local runner where a start does not need it: Trino's catalog
# connects to PostgreSQL at the first query, so the runner starts both at once.
COMPOSE_WAITS_LONGER = {"trino": {"postgres"}}


def test_every_port_setting_belongs_to_exactly_one_service():
    ports = [f.name for f in dataclasses.fields(Settings) if f.metadata["port"]]
    owned = [p for spec in specs.SPECS for p in spec.ports]
    assert sorted(owned) == sorted(ports)


def test_every_service_has_a_builder_and_a_status_row():
    for spec in specs.SPECS:
        assert spec.name == "postgres" or callable(getattr(services, spec.builder)), spec.name
        assert spec.probe is None or spec.probe in status.PROBES, spec.name
        assert set(spec.needs) <= set(specs.NAMES), spec.name
    assert status.SERVICES == specs.NAMES
    assert runner.Watchdog.DEPENDS == specs.DEPENDS
    assert services.STOP_ORDER == specs.STOP_ORDER


def test_the_start_waves_follow_the_needs_and_stop_is_their_reverse():
    started: list[str] = []
    for group in ("stack", "pipeline"):
        for wave in specs.waves(group):
            for spec in wave:
                assert set(spec.needs) <= set(started), (spec.name, started)
            started += [spec.name for spec in wave]
    assert sorted(started) == sorted(specs.NAMES)
    assert list(specs.STOP_ORDER) == started[::-1]
    assert [[s.name for s in w] for w in specs.waves("stack")] == [
        ["kafka", "namenode", "postgres", "trino"],
        ["datanode"],
    ]


def test_a_cycle_is_refused(monkeypatch):
    loop = (specs.Spec("a", "stack", "a", needs=("b",)), specs.Spec("b", "stack", "b", needs=("a",)))
    monkeypatch.setattr(specs, "SPECS", loop)
    with pytest.raises(ValueError, match="need each other"):
        specs.waves("stack")


@pytest.mark.parametrize("spec", specs.SPECS, ids=lambda s: s.name)
def test_compose_runs_each_service_after_what_it_needs(spec):
    """The compose file's service of the same name waits (service_healthy, directly or through
    another service) for everything the description says it needs, and for nothing else of ours
    unless said so above."""
    assert spec.name in COMPOSE
    healthy = {
        name: tuple(
            dep
            for dep, cond in (svc.get("depends_on") or {}).items()
            if cond.get("condition") == "service_healthy" and dep in specs.BY_NAME
        )
        for name, svc in COMPOSE.items()
    }
    waits = specs.closure(spec.name, healthy)
    needs = specs.closure(spec.name)
    assert needs <= waits, f"compose starts {spec.name} before {sorted(needs - waits)}"
    assert waits - needs <= COMPOSE_WAITS_LONGER.get(spec.name, set()), sorted(waits - needs)
