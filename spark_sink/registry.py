"""Trino tables and partitions for what the sink lands: no DDL by hand, ever.

Tables are external Hive tables over ``<warehouse>/<table>``; every date partition a batch
writes is registered at once, so rows are queryable as soon as the batch commits.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable

from questlog.catalog import PARTITION_COLUMN, Table
from questlog.settings import Settings
from questlog.sql import execute

log = logging.getLogger(__name__)


def quote(identifier: str) -> str:
    return '"' + identifier.replace('"', '""') + '"'


def literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def create_schema_sql(settings: Settings) -> str:
    return (
        f"CREATE SCHEMA IF NOT EXISTS {quote(settings.trino_catalog)}.{quote(settings.trino_schema)} "
        f"WITH (location = {literal(settings.warehouse_url)})"
    )


def create_table_sql(settings: Settings, table: Table) -> str:
    columns = ",\n  ".join(f"{quote(c.name)} {c.trino_type}" for c in table.columns)
    return (
        f"CREATE TABLE IF NOT EXISTS {qualified(settings, table.name)} (\n  {columns},\n"
        f"  {quote(PARTITION_COLUMN)} varchar\n) WITH (\n  format = 'PARQUET',\n"
        f"  partitioned_by = ARRAY[{literal(PARTITION_COLUMN)}],\n"
        f"  external_location = {literal(settings.warehouse_url + '/' + table.name)}\n)"
    )


def qualified(settings: Settings, table: str) -> str:
    return f"{quote(settings.trino_catalog)}.{quote(settings.trino_schema)}.{quote(table)}"


def missing_columns_sql(settings: Settings, table: Table, existing: Iterable[str]) -> list[str]:
    """ALTER statements adding catalog columns the table lacks (old rows read them as NULL)."""
    have = set(existing)
    return [
        f"ALTER TABLE {qualified(settings, table.name)} ADD COLUMN {quote(c.name)} {c.trino_type}"
        for c in table.columns
        if c.name not in have
    ]


def register_partition_sql(settings: Settings, table: str, dt: str) -> str:
    return (
        f"CALL {quote(settings.trino_catalog)}.system.register_partition("
        f"{literal(settings.trino_schema)}, {literal(table)}, ARRAY[{literal(PARTITION_COLUMN)}], "
        f"ARRAY[{literal(dt)}])"
    )


class TrinoRegistry:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._known: dict[str, set[str]] = {}

    def _execute(self, sql: str) -> list[list]:
        # As the sink's own user: the only one Trino lets create, alter and fill tables.
        return execute(self.settings, sql, user=self.settings.sink_trino_user)[1]

    def ensure_tables(self, tables: Iterable[Table]) -> None:
        self._execute(create_schema_sql(self.settings))
        for table in tables:
            self._execute(create_table_sql(self.settings, table))
            existing = [
                row[0]
                for row in self._execute(
                    f"SELECT column_name FROM {quote(self.settings.trino_catalog)}.information_schema.columns "
                    f"WHERE table_schema = {literal(self.settings.trino_schema)} "
                    f"AND table_name = {literal(table.name)}"
                )
            ]
            for sql in missing_columns_sql(self.settings, table, existing):
                log.info("schema change: %s", sql)
                self._execute(sql)
            partitions = self._execute(
                f"SELECT {quote(PARTITION_COLUMN)} FROM {qualified(self.settings, table.name + '$partitions')}"
            )
            self._known[table.name] = {row[0] for row in partitions}
        log.info("Trino tables ready: %s", ", ".join(sorted(self._known)))

    def unknown(self, table: str, dts: Iterable[str]) -> list[str]:
        """Those of ``dts`` not registered yet (as far as this registry knows), sorted."""
        return sorted(set(dts) - self._known.get(table, set()))

    def register_partitions(self, table: str, dts: Iterable[str]) -> None:
        known = self._known.setdefault(table, set())
        for dt in sorted(set(dts) - known):
            try:
                self._execute(register_partition_sql(self.settings, table, dt))
            except Exception as exc:  # registered meanwhile by someone else (another sink, by hand)
                if "ALREADY_EXISTS" not in str(exc) and "already registered" not in str(exc):
                    raise
            known.add(dt)
            log.info("registered partition %s/dt=%s", table, dt)
