"""Who may change tables, asked of the real Trino (compose/trino/hive-rules.json): the sink's user
creates, alters, fills and drops; every other user, QUESTLOG_TRINO_USER included, only reads."""

import uuid

import pytest
import requests
import trino
from trino.exceptions import TrinoUserError

from questlog.catalog import Field, Table
from questlog.sql import execute
from spark_sink.registry import TrinoRegistry, qualified
from tests.helpers import query

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def probe(live_settings):
    """A table made by the sink's registry, as the sink makes every table, dropped afterwards."""
    table = Table(
        f"access_probe_{uuid.uuid4().hex[:8]}", "unused", (Field("event_id", "string"),), "received_at", ("event_id",)
    )
    registry = TrinoRegistry(live_settings)
    registry.ensure_tables([table])
    yield registry, table
    execute(
        live_settings,
        f"DROP TABLE IF EXISTS {qualified(live_settings, table.name)}",
        user=live_settings.sink_trino_user,
    )


def refused(settings, sql, user=None):
    with pytest.raises(TrinoUserError) as error:
        execute(settings, sql, user=user)
    return error.value


def test_the_reader_and_the_sink_are_different_users(live_settings):
    assert live_settings.trino_user != live_settings.sink_trino_user


def test_the_sinks_registry_creates_alters_and_registers(live_settings, probe):
    registry, table = probe
    assert query(live_settings, f"SELECT count(*) FROM {table.name}") == [[0]]  # created; readers read it

    wider = Table(table.name, table.topic, (*table.columns, Field("extra", "long")), table.time_column, table.key)
    registry.ensure_tables([wider])  # ALTER TABLE ... ADD COLUMN, as the sink does for a new field
    columns = query(
        live_settings,
        f"SELECT column_name FROM information_schema.columns "
        f"WHERE table_name = '{table.name}' ORDER BY ordinal_position",
    )
    assert columns == [["event_id"], ["extra"], ["dt"]]

    location = f"{live_settings.warehouse_dir}/{table.name}/dt=2026-01-02"
    requests.put(
        f"{live_settings.webhdfs_url}/webhdfs/v1{location}", params={"op": "MKDIRS"}, timeout=10
    ).raise_for_status()
    registry.register_partitions(table.name, ["2026-01-02"])
    assert query(live_settings, f'SELECT dt FROM "{table.name}$partitions"') == [["2026-01-02"]]


@pytest.mark.parametrize(
    "statement",
    [
        "INSERT INTO {table} (event_id, dt) VALUES ('intruder', '2026-01-03')",
        "DELETE FROM {table}",
        "DROP TABLE {table}",
        "ALTER TABLE {table} ADD COLUMN intruder varchar",
        "ALTER TABLE {table} RENAME TO {other}",
        "CREATE TABLE {other} AS SELECT * FROM {table}",
        "CREATE VIEW {other} AS SELECT * FROM {table}",
        "COMMENT ON TABLE {table} IS 'intruder'",
        "ANALYZE {table}",
        "CALL system.register_partition('{schema}', '{name}', ARRAY['dt'], ARRAY['2026-01-04'])",
        "CALL system.unregister_partition('{schema}', '{name}', ARRAY['dt'], ARRAY['2026-01-02'])",
        "CREATE SCHEMA hive.intruders",
    ],
    ids=[
        "insert",
        "delete",
        "drop",
        "add-column",
        "rename",
        "ctas",
        "view",
        "comment",
        "analyze",
        "register-partition",
        "unregister-partition",
        "create-schema",
    ],
)
def test_a_reader_cannot_change_anything(live_settings, probe, statement):
    _, table = probe
    sql = statement.format(
        table=qualified(live_settings, table.name),
        name=table.name,
        other=qualified(live_settings, table.name + "_other"),
        schema=live_settings.trino_schema,
    )
    error = refused(live_settings, sql)
    assert error.error_name == "PERMISSION_DENIED", error.message
    assert "Access Denied" in error.message
    # and nothing changed
    assert query(live_settings, f"SELECT count(*) FROM {table.name}") == [[0]]
    assert query(live_settings, f"SHOW TABLES LIKE '{table.name}%'") == [[table.name]]


def test_a_reader_cannot_drop_a_schema(live_settings):
    # An empty one (Trino checks that a schema is empty before it asks who may drop it).
    schema = f"access_probe_{uuid.uuid4().hex[:8]}"
    execute(live_settings, f"CREATE SCHEMA {live_settings.trino_catalog}.{schema}", user=live_settings.sink_trino_user)
    try:
        error = refused(live_settings, f"DROP SCHEMA {live_settings.trino_catalog}.{schema}")
        assert error.error_name == "PERMISSION_DENIED", error.message
        assert [schema] in query(live_settings, "SHOW SCHEMAS")
    finally:
        execute(
            live_settings, f"DROP SCHEMA {live_settings.trino_catalog}.{schema}", user=live_settings.sink_trino_user
        )


def test_another_user_is_a_reader_too(live_settings, probe):
    _, table = probe
    error = refused(live_settings, f"DROP TABLE {qualified(live_settings, table.name)}", user="mallory")
    assert error.error_name == "PERMISSION_DENIED"
    assert execute(live_settings, f"SELECT count(*) FROM {table.name}", user="mallory")[1] == [[0]]


def test_a_reader_cannot_enable_hives_optimize(live_settings, probe):
    # ALTER TABLE ... EXECUTE optimize rewrites files; Hive runs it only with this session property,
    # which only the sink's user may set (file-based rules have no table-procedure privilege).
    _, table = probe
    conn = trino.dbapi.connect(
        host=live_settings.trino_host,
        port=live_settings.trino_port,
        user=live_settings.trino_user,
        catalog=live_settings.trino_catalog,
        schema=live_settings.trino_schema,
        session_properties={f"{live_settings.trino_catalog}.non_transactional_optimize_enabled": "true"},
    )
    try:
        with pytest.raises(TrinoUserError) as error:
            conn.cursor().execute(
                f"ALTER TABLE {qualified(live_settings, table.name)} EXECUTE optimize(file_size_threshold => '1MB')"
            )
    finally:
        conn.close()
    assert error.value.error_name == "PERMISSION_DENIED", error.value.message
    assert "non_transactional_optimize_enabled" in error.value.message
