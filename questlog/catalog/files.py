"""Schema sources: TOML files (what people edit) and the deployed JSON (what stages run)."""

from __future__ import annotations

import json
import re
import tomllib
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

from questlog.catalog.model import (
    CATALOG_FORMAT,
    DEAD_LETTER_TABLE,
    ENVELOPE_NAMES,
    PARTITION_COLUMN,
    PII_MODES,
    SESSION_TYPE,
    SESSIONS_TABLE,
    TYPES,
    Catalog,
    CatalogError,
    EventType,
    Field,
)
from questlog.catalog.validation import short_name

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

# What an event type, a table and a field may be named: ASCII lower case, digits and `_`,
# starting with a letter, at most NAME_MAX_CHARS. Kafka's topic names take [a-zA-Z0-9._-] up to
# 249 characters, HDFS paths and Trino's identifiers take far more, PostgreSQL's identifiers (the
# JDBC catalog's tables) 63 bytes; `str.isidentifier()` let through `café`, which no topic can be.
NAME_MAX_CHARS = 63
NAME_RULE = f"[a-z][a-z0-9_]* and at most {NAME_MAX_CHARS} characters"
_NAME = re.compile(r"[a-z][a-z0-9_]*\Z")


def valid_name(name: object) -> bool:
    """Whether ``name`` may name an event type, a table or a field (NAME_RULE)."""
    return isinstance(name, str) and len(name) <= NAME_MAX_CHARS and _NAME.match(name) is not None


DEPLOYED_CATALOG = Path(__file__).resolve().parent / "catalog.json"


def _parse_field(source: str, name: str, spec: Any) -> Field:
    if not isinstance(spec, dict):
        raise CatalogError(f"{source}: field {name!r} must be a table, got {spec!r}")
    kind: Any = spec.get("type")
    if kind not in TYPES:
        raise CatalogError(f"{source}: field {name!r} has type {kind!r}; expected one of {sorted(TYPES)}")
    if name in ENVELOPE_NAMES or name == PARTITION_COLUMN:
        raise CatalogError(f"{source}: field {name!r} is reserved (envelope or partition column)")
    if not valid_name(name):
        shown = short_name(name) if isinstance(name, str) else repr(name)
        raise CatalogError(f"{source}: field name {shown} must be {NAME_RULE}")
    pii = spec.get("pii")
    if pii is not None and pii not in PII_MODES:
        raise CatalogError(f"{source}: field {name!r} has pii {pii!r}; expected one of {list(PII_MODES)}")
    if pii == "ip" and kind != "string":
        raise CatalogError(f"{source}: field {name!r}: pii 'ip' is for string fields (addresses)")
    if pii == "hash" and kind != "string":
        raise CatalogError(f"{source}: field {name!r}: pii 'hash' is for string fields (the hash is text)")
    return Field(name, kind, str(spec.get("description", "")), bool(spec.get("required", False)), pii)


def parse_schema(source: str, doc: Mapping[str, Any]) -> EventType:
    """Build an EventType from one parsed schema document; ``source`` names it in errors."""
    name: Any = doc.get("event_type")
    table: Any = doc.get("table")
    for key, value in (("event_type", name), ("table", table)):
        if not valid_name(value):
            shown = short_name(value) if isinstance(value, str) else repr(value)
            raise CatalogError(f"{source}: {key} must be {NAME_RULE}, got {shown}")
    if table == DEAD_LETTER_TABLE:
        raise CatalogError(f"{source}: table name {table!r} is reserved (dead letters)")
    if name == "dlq":
        raise CatalogError(f"{source}: event_type 'dlq' is reserved (its topic is the dead letters')")
    if table == SESSIONS_TABLE or name == SESSION_TYPE:
        raise CatalogError(
            f"{source}: event_type {SESSION_TYPE!r} and table {SESSIONS_TABLE!r} are reserved (the router's sessions)"
        )
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CatalogError(f"{source}: version must be a positive integer, got {version!r}")
    retention = doc.get("retention_days")
    if retention is not None and (not isinstance(retention, int) or isinstance(retention, bool) or retention < 1):
        raise CatalogError(f"{source}: retention_days must be a positive integer (days), got {retention!r}")
    http = doc.get("http", {})
    fields = doc.get("fields", {})
    if isinstance(fields, list):  # the deployed form keeps fields as an ordered list
        fields = {f.get("name"): f for f in fields}
    return EventType(
        name=name,
        table=table,
        description=str(doc.get("description", "")),
        fields=tuple(_parse_field(source, n, s) for n, s in fields.items()),
        routes=tuple(http.get("routes", ())),
        response=str(http.get("response", "OK\n")),
        version=version,
        retention_days=retention,
    )


def build_catalog(types: Iterable[EventType]) -> Catalog:
    by_name: dict[str, EventType] = {}
    tables: set[str] = set()
    routes: set[str] = set()
    for et in types:
        if et.name in by_name:
            raise CatalogError(f"event type {et.name!r} is defined twice")
        if et.table in tables:
            raise CatalogError(f"table {et.table!r} is used by two event types")
        for route in et.routes:
            if route in routes:
                raise CatalogError(f"route {route!r} is used by two event types")
            routes.add(route)
        by_name[et.name] = et
        tables.add(et.table)
    return Catalog(dict(sorted(by_name.items())))


def load_schemas(directory: str | Path = SCHEMA_DIR) -> Catalog:
    """Compile every ``*.toml`` schema in ``directory`` into a catalog."""
    directory = Path(directory)
    types = []
    for path in sorted(directory.glob("*.toml")):
        try:
            doc = tomllib.loads(path.read_text(encoding="utf-8"))
        except tomllib.TOMLDecodeError as exc:
            raise CatalogError(f"{path.name}: not valid TOML: {exc}") from None
        types.append(parse_schema(path.name, doc))
    if not types:
        raise CatalogError(f"no event schemas (*.toml) in {directory}")
    return build_catalog(types)


def catalog_to_json(catalog: Catalog) -> str:
    """The deployed form: deterministic, so that a committed catalog.json can be compared."""
    doc = {
        "format": CATALOG_FORMAT,
        "types": [
            {
                "event_type": et.name,
                "version": et.version,
                "table": et.table,
                "description": et.description,
                "http": {"routes": list(et.routes), "response": et.response},
                "fields": [
                    {"name": f.name, "type": f.type, "required": f.required, "description": f.description}
                    | ({"pii": f.pii} if f.pii else {})
                    for f in et.fields
                ],
            }
            | ({"retention_days": et.retention_days} if et.retention_days else {})
            for et in catalog
        ],
    }
    return json.dumps(doc, indent=2, ensure_ascii=False) + "\n"


def catalog_from_json(text: str, source: str = "catalog.json") -> Catalog:
    try:
        doc = json.loads(text)
    except ValueError as exc:
        raise CatalogError(f"{source}: not valid JSON: {exc}") from None
    if not isinstance(doc, dict) or doc.get("format") != CATALOG_FORMAT:
        raise CatalogError(f"{source}: not a Questlog catalog (format {CATALOG_FORMAT})")
    return build_catalog(parse_schema(f"{source}: {t.get('event_type')}", t) for t in doc["types"])


def load_catalog(path: str | Path | None = None) -> Catalog:
    """The deployed catalog at ``path`` (default: the packaged catalog.json)."""
    path = Path(path) if path else DEPLOYED_CATALOG
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise CatalogError(
            f"cannot read the deployed catalog {path}: {exc.strerror}; create it with `questlog catalog deploy`"
        ) from None
    return catalog_from_json(text, str(path))
