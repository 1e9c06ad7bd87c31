"""Who may change tables, asked of the real Trino (compose/trino/iceberg-rules.json): the
compactor's user may; every other user, QUESTLOG_TRINO_USER included, only reads. Tables are made
in the Iceberg catalog by the sink's Spark (spark_sink/tables.py), never through Trino."""

import uuid

import pytest
from trino.exceptions import HttpError, TrinoUserError

from questlog.sql import execute
from tests.helpers import query

pytestmark = pytest.mark.integration


def qualified(settings, table: str) -> str:
    return f'"{settings.trino_catalog}"."{settings.trino_schema}"."{table}"'


@pytest.fixture(scope="module")
def probe(live_settings):
    """A table of the compactor's user (the only one who may make one in Trino), dropped afterwards."""
    name = f"access_probe_{uuid.uuid4().hex[:8]}"
    execute(
        live_settings,
        f"CREATE TABLE {qualified(live_settings, name)} (event_id varchar, dt varchar) WITH (partitioning = ARRAY['dt'])",
        user=live_settings.compact_trino_user,
    )
    yield name
    execute(
        live_settings, f"DROP TABLE IF EXISTS {qualified(live_settings, name)}", user=live_settings.compact_trino_user
    )


def refused(settings, sql, user=None):
    with pytest.raises(TrinoUserError) as error:
        execute(settings, sql, user=user)
    return error.value


def test_the_reader_and_the_compactor_are_different_users(live_settings):
    assert live_settings.trino_user != live_settings.compact_trino_user


def test_the_compactors_user_may_write_and_readers_read_it(live_settings, probe):
    execute(
        live_settings,
        f"INSERT INTO {qualified(live_settings, probe)} VALUES ('a', '2026-01-02')",
        user=live_settings.compact_trino_user,
    )
    assert query(live_settings, f"SELECT event_id, dt FROM {probe}") == [["a", "2026-01-02"]]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO {table} (event_id, dt) VALUES ('intruder', '2026-01-03')",
        "DELETE FROM {table}",
        "UPDATE {table} SET event_id = 'intruder'",
        "DROP TABLE {table}",
        "ALTER TABLE {table} ADD COLUMN intruder varchar",
        "ALTER TABLE {table} RENAME TO {other}",
        "CREATE TABLE {other} AS SELECT * FROM {table}",
        "COMMENT ON TABLE {table} IS 'intruder'",
        "CREATE SCHEMA {catalog}.intruders",
    ],
    ids=["insert", "delete", "update", "drop", "add-column", "rename", "ctas", "comment", "create-schema"],
)
def test_a_reader_cannot_change_anything(live_settings, probe, statement):
    sql = statement.format(
        table=qualified(live_settings, probe),
        other=qualified(live_settings, probe + "_other"),
        catalog=live_settings.trino_catalog,
    )
    before = query(live_settings, f"SELECT count(*) FROM {probe}")
    error = refused(live_settings, sql)
    assert error.error_name == "PERMISSION_DENIED", error.message
    assert "Access Denied" in error.message
    assert query(live_settings, f"SELECT count(*) FROM {probe}") == before  # and nothing changed
    assert query(live_settings, f"SHOW TABLES LIKE '{probe}%'") == [[probe]]


def test_another_user_is_refused_before_any_rule(live_settings, probe):
    """Trino authenticates every client (ops/stack/trino_security.py): a name it has no password
    for gets 401, for a change and a read alike, and nothing changed."""
    for sql in (
        f"DROP TABLE {qualified(live_settings, probe)}",
        f"SELECT count(*) FROM {qualified(live_settings, probe)}",
    ):
        with pytest.raises(HttpError, match="error 401"):
            execute(live_settings, sql, user="mallory")
    assert query(live_settings, f"SHOW TABLES LIKE '{probe}%'") == [[probe]]
