"""Pages generated from the catalog: the event reference (docs/events.md) and the README's list of
tables (between its TABLES_BEGIN and TABLES_END markers)."""

from __future__ import annotations

from questlog.catalog import DEAD_LETTER_COLUMNS, DEAD_LETTER_TABLE, ENVELOPE, PARTITION_COLUMN, Catalog, Field

PII_NOTES = {
    "hash": " Personal: stored as a keyed hash (`hmac:...`, docs/privacy.md).",
    "drop": " Personal: never stored (dropped by the router).",
    "ip": " Personal: stored cut to its network (IPv4 /24, IPv6 /48).",
}


def _rows(fields: tuple[Field, ...]) -> list[str]:
    out = ["| field | type | required | description |", "| --- | --- | --- | --- |"]
    out += [
        f"| `{f.name}` | {f.type} ({f.trino_type}) | {'yes' if f.required else ''} | "
        f"{f.description.replace('|', '/')}{PII_NOTES[f.pii] if f.pii else ''} |"
        for f in fields
    ]
    return out


def render_markdown(catalog: Catalog) -> str:
    lines = [
        "# Event reference",
        "",
        "Generated from `questlog/catalog/schemas/` by `questlog catalog docs -o docs/events.md`; do not "
        "edit by hand. Each event type is one Iceberg table `iceberg.events.<table>` (Trino and Spark) with the envelope "
        f"columns, the type's own fields and the partition column `{PARTITION_COLUMN}` (the UTC date of "
        "`received_at`).",
        "",
        "| event type | version | table | GET route | description |",
        "| --- | --- | --- | --- | --- |",
    ]
    lines += [
        f"| [`{et.name}`](#{et.name}) | {et.version} | `{et.table}` | "
        f"{', '.join(f'`{r}`' for r in et.routes)} | {et.description} |"
        for et in catalog
    ]
    lines += ["", "## Envelope", "", "Every event carries these, whatever its type.", "", *_rows(ENVELOPE)]
    for et in catalog:
        lines += [
            "",
            f"## {et.name}",
            "",
            f"{et.description} Table `{et.table}`, schema version "
            f"{et.version}."
            + (f" Rows are kept {et.retention_days} days after their day (`dt`)." if et.retention_days else "")
            + (f" GET {', '.join(f'`{r}`' for r in et.routes)} answers `{et.response.strip()}`." if et.routes else ""),
            "",
        ]
        lines += _rows(et.fields) if et.fields else ["No fields beyond the envelope."]
    lines += [
        "",
        f"## {DEAD_LETTER_TABLE}",
        "",
        "Every event the router rejected, with why and where it came from. `questlog replay` re-sends "
        "those that the current catalog accepts.",
        "",
        *_rows(DEAD_LETTER_COLUMNS),
        "",
    ]
    return "\n".join(lines)


TABLES_BEGIN = "<!-- tables:begin (generated from the catalog by `questlog catalog docs --readme README.md`) -->"
TABLES_END = "<!-- tables:end -->"


def render_tables(catalog: Catalog, trino_catalog: str = "iceberg", schema: str = "events") -> str:
    """The README's list of tables: each event type's Trino table and GET routes, and the dead letters."""
    lines = [TABLES_BEGIN, "| event type | Trino table | HTTP route |", "| --- | --- | --- |"]
    lines += [
        f"| `{et.name}` | `{trino_catalog}.{schema}.{et.table}` | {', '.join(f'`GET {r}`' for r in et.routes)} |"
        for et in catalog
    ]
    lines += [f"| (rejected events) | `{trino_catalog}.{schema}.{DEAD_LETTER_TABLE}` | |", TABLES_END]
    return "\n".join(lines)


def with_tables(readme: str, catalog: Catalog) -> str:
    """``readme`` with its list of tables generated anew from ``catalog``."""
    if TABLES_BEGIN not in readme or TABLES_END not in readme:
        raise ValueError(f"no list of tables to refresh (markers {TABLES_BEGIN} ... {TABLES_END})")
    head, rest = readme.split(TABLES_BEGIN, 1)
    return head + render_tables(catalog) + rest.split(TABLES_END, 1)[1]
