"""Trino's exposure, from its config files: the local stack binds 127.0.0.1, compose the container's
interfaces; the Iceberg catalog's access rules let only the compactor's user change tables, in both
stacks, and its database password never sits in a config file of the repository."""

import json
import re

import pytest
import yaml

from ops.stack.services import COMPOSE, merge_properties, trino_catalog_config, trino_config
from questlog.settings import Settings

RULES = COMPOSE / "trino" / "iceberg-rules.json"
ICEBERG = COMPOSE / "trino" / "catalog" / "iceberg.properties"


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


def test_an_https_url_makes_trino_https_only_with_password_authentication(tmp_path):
    settings = Settings.from_env({}, home=str(tmp_path), trino_url="https://127.0.0.1:18080")
    merged = props(merge_properties((COMPOSE / "trino" / "config.properties").read_text(), trino_config(settings)))
    assert merged["http-server.http.enabled"] == "false"
    assert (merged["http-server.https.enabled"], merged["http-server.https.port"]) == ("true", "18080")
    assert merged["http-server.authentication.type"] == "PASSWORD"
    assert merged["discovery.uri"] == "https://127.0.0.1:18080"
    assert merged["internal-communication.shared-secret"] == "${ENV:QUESTLOG_TRINO_SHARED_SECRET}"  # not in the file


def test_a_password_hash_is_trinos_pbkdf2_format():
    import hashlib

    from ops.stack.trino_security import pbkdf2_hash

    iterations, salt, digest = pbkdf2_hash("s3cret", 1000, bytes(range(16))).split(":")
    assert (iterations, salt) == ("1000", bytes(range(16)).hex())
    assert digest == hashlib.pbkdf2_hmac("sha1", b"s3cret", bytes(range(16)), 1000, dklen=32).hex()
    assert digest == digest.lower() and len(digest) == 64


def test_the_shared_config_leaves_the_bind_address_to_each_environment():
    # In a container Trino must listen on the container's interface: no bind address in the shared
    # file, so the image's default (every interface of the container) holds there.
    assert "node.bind-ip" not in props((COMPOSE / "trino" / "config.properties").read_text())


def test_the_iceberg_catalog_uses_the_shared_rules_in_both_stacks():
    iceberg = props(ICEBERG.read_text())
    assert iceberg["iceberg.security"] == "file"
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    mounts = {dst: (src, rest) for src, dst, *rest in (v.split(":") for v in compose["services"]["trino"]["volumes"])}
    source, options = mounts[iceberg["security.config-file"]]  # compose reads the rules where iceberg.properties says
    assert (COMPOSE / source).resolve() == RULES.resolve() and options == ["ro"]
    local = props(merge_properties(ICEBERG.read_text(), trino_catalog_config(Settings.from_env({}))))
    assert local["security.config-file"] == str(RULES) and RULES.exists()


def test_trino_and_spark_share_one_jdbc_catalog_whose_password_comes_from_the_environment():
    iceberg = props(ICEBERG.read_text())
    assert iceberg["iceberg.catalog.type"] == "jdbc" and iceberg["iceberg.jdbc-catalog.schema-version"] == "V1"
    assert iceberg["iceberg.jdbc-catalog.connection-password"] == "${ENV:QUESTLOG_CATALOG_DB_PASSWORD}"
    settings = Settings.from_env({}, catalog_db_url="postgresql://cat@127.0.0.1:15433/meta")
    local = props(merge_properties(ICEBERG.read_text(), trino_catalog_config(settings)))
    assert local["iceberg.jdbc-catalog.connection-url"] == "jdbc:postgresql://127.0.0.1:15433/meta"
    assert local["iceberg.jdbc-catalog.connection-user"] == "cat"
    assert local["iceberg.jdbc-catalog.catalog-name"] == settings.trino_catalog  # Spark's catalog name too
    assert local["iceberg.jdbc-catalog.connection-password"] == "${ENV:QUESTLOG_CATALOG_DB_PASSWORD}"


def test_the_compose_stack_publishes_trino_on_loopback_only():
    compose = yaml.safe_load((COMPOSE / "docker-compose.yml").read_text())
    assert compose["services"]["trino"]["ports"] == ["127.0.0.1:8080:8080"]


def test_only_the_compactors_user_may_change_tables(rules):
    compactor, reader = Settings.from_env({}).compact_trino_user, Settings.from_env({}).trino_user
    assert compactor != reader
    for table in ("sword_purchases", "dead_letters", "sword_purchases$files", "anything_new"):
        assert "OWNERSHIP" in first_match(rules["tables"], compactor, schema="events", table=table)["privileges"]
        for user in (reader, "mallory", "questlog-compactor2", "xquestlog-compactor", "questlog-sink"):
            assert first_match(rules["tables"], user, schema="events", table=table)["privileges"] == ["SELECT"]
    assert first_match(rules["schemas"], compactor, schema="events")["owner"] is True
    assert first_match(rules["schemas"], reader, schema="events")["owner"] is False
