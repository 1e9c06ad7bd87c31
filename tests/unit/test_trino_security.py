"""Trino's exposure, from its config files: the local stack binds 127.0.0.1, compose the container's
interfaces; the Hive catalog's access rules let only the sink's user write, in both stacks."""

import json
import re

import pytest
import yaml

from questlog.settings import Settings
from questlog.stack.services import COMPOSE, merge_properties, trino_catalog_config, trino_config

RULES = COMPOSE / "trino" / "hive-rules.json"
HIVE = COMPOSE / "trino" / "catalog" / "hive.properties"


def props(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if "=" in line and not line.startswith("#"))


@pytest.fixture(scope="module")
def rules() -> dict:
    return json.loads(RULES.read_text())


def first_match(rules: list[dict], user: str, **names: str) -> dict | None:
    """Trino's file-based rules: the first rule whose patterns (default .*) all match."""
    for rule in rules:
        patterns = {"user": user, **names}
        if all(re.fullmatch(rule.get(key, ".*"), value) for key, value in patterns.items()):
            return rule
    return None


def test_the_local_stack_binds_trino_to_its_urls_host():
    merged = props(
        merge_properties(
            (COMPOSE / "trino" / "config.properties").read_text(),
            trino_config(Settings.from_env({}, trino_url="http://127.0.0.1:18080")),
        )
    )
    assert merged["node.bind-ip"] == "127.0.0.1"
    assert merged["http-server.http.port"] == "18080"
    assert trino_config(Settings.from_env({}, trino_url="http://localhost:8080"))["node.bind-ip"] == "127.0.0.1"


def test_the_shared_config_leaves_the_bind_address_to_each_environment():
    # In a container Trino must listen on the container's interface: no bind address in the shared
    # file, so the image's default (every interface of the container) holds there.
    assert "node.bind-ip" not in props((COMPOSE / "trino" / "config.properties").read_text())


def test_the_hive_catalog_uses_the_shared_rules_in_both_stacks():
    hive = props(HIVE.read_text())
    assert hive["hive.security"] == "file"
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    mounts = {dst: (src, rest) for src, dst, *rest in (v.split(":") for v in compose["services"]["trino"]["volumes"])}
    source, options = mounts[hive["security.config-file"]]  # compose reads the rules where hive.properties says
    assert (COMPOSE / source).resolve() == RULES.resolve() and options == ["ro"]
    local = props(merge_properties(HIVE.read_text(), trino_catalog_config(Settings.from_env({}))))
    assert local["security.config-file"] == str(RULES) and RULES.exists()


def test_the_compose_stack_publishes_trino_on_loopback_only():
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    assert compose["services"]["trino"]["ports"] == ["127.0.0.1:8080:8080"]


def test_only_the_sinks_user_may_write(rules):
    sink, reader = Settings.from_env({}).sink_trino_user, Settings.from_env({}).trino_user
    assert sink != reader
    for table in ("sword_purchases", "dead_letters", "sword_purchases$partitions", "anything_new"):
        assert set(first_match(rules["tables"], sink, schema="events", table=table)["privileges"]) == {
            "SELECT",
            "INSERT",
            "OWNERSHIP",
        }
        for user in (reader, "mallory", "questlog-sink2", "xquestlog-sink"):
            assert first_match(rules["tables"], user, schema="events", table=table)["privileges"] == ["SELECT"]
    assert first_match(rules["schemas"], sink, schema="events")["owner"] is True
    assert first_match(rules["schemas"], reader, schema="events")["owner"] is False
    call = dict(schema="system", procedure="register_partition")
    assert first_match(rules["procedures"], sink, **call)["privileges"] == ["EXECUTE"]
    assert first_match(rules["procedures"], reader, **call) is None  # no rule: denied
    for procedure in ("unregister_partition", "create_empty_partition", "sync_partition_metadata", "drop_stats"):
        assert first_match(rules["procedures"], sink, schema="system", procedure=procedure) is None
    optimize = dict(property="non_transactional_optimize_enabled")
    assert first_match(rules["session_properties"], reader, **optimize)["allow"] is False
    assert first_match(rules["session_properties"], sink, **optimize)["allow"] is True
