"""The event catalog: one schema per event type, the single source of truth.

Every stage reads it: the collector for its routes and known types, the router to validate, the
sink for columns, and the Trino registration for tables. Schemas live in ``schemas/*.toml``, one
file per event type; nothing else in the code names an event type.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import dataclass
from datetime import datetime
from functools import lru_cache
from pathlib import Path
from typing import Any, Iterable, Iterator, Mapping

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"

# Catalog type -> (Trino type, Spark SQL type)
TYPES: Mapping[str, tuple[str, str]] = {
    "string": ("varchar", "string"),
    "long": ("bigint", "bigint"),
    "double": ("double", "double"),
    "boolean": ("boolean", "boolean"),
    "timestamp": ("timestamp(3)", "timestamp"),
}

PARTITION_COLUMN = "dt"


class CatalogError(ValueError):
    """A schema file is malformed; the message names the file and the problem."""


@dataclass(frozen=True)
class Field:
    name: str
    type: str
    description: str = ""
    required: bool = False

    @property
    def trino_type(self) -> str:
        return TYPES[self.type][0]

    @property
    def spark_type(self) -> str:
        return TYPES[self.type][1]


# Fields every accepted event carries, set by the collector (a client may send its own event_id).
ENVELOPE: tuple[Field, ...] = (
    Field("event_id", "string", "Unique id of the event and the dedupe key; a client may send its own.", True),
    Field("event_type", "string", "The catalog type of the event.", True),
    Field("received_at", "timestamp", "When the collector accepted the event (server clock, UTC).", True),
    Field("host", "string", "The request's Host header."),
    Field("user_agent", "string", "The request's User-Agent header."),
    Field("accept", "string", "The request's Accept header."),
)
ENVELOPE_NAMES = frozenset(f.name for f in ENVELOPE)


@dataclass(frozen=True)
class Table:
    """A Trino table fed from one Kafka topic: its columns, in order, without the partition."""

    name: str
    topic: str
    columns: tuple[Field, ...]
    time_column: str  # the timestamp the date partition is taken from
    key: tuple[str, ...]  # columns that identify a row; duplicates by key are removed


@dataclass(frozen=True)
class EventType:
    name: str
    table: str
    description: str
    fields: tuple[Field, ...]
    routes: tuple[str, ...] = ()
    response: str = "OK\n"

    @property
    def columns(self) -> tuple[Field, ...]:
        return ENVELOPE + self.fields

    def field(self, name: str) -> Field | None:
        for f in self.columns:
            if f.name == name:
                return f
        return None


# The dead-letter table: what the router could not route, with why and where it came from.
DEAD_LETTER_TABLE = "dead_letters"
DEAD_LETTER_COLUMNS: tuple[Field, ...] = (
    Field("reason", "string", "Why the event was rejected: every problem found, '; '-separated.", True),
    Field("raw", "string", "The raw payload as received (undecodable bytes replaced).", True),
    Field("source_topic", "string", "Kafka topic the payload was read from.", True),
    Field("source_partition", "long", "Its partition.", True),
    Field("source_offset", "long", "Its offset.", True),
    Field("failed_at", "timestamp", "When the router rejected it (router clock, UTC).", True),
    Field("event_id", "string", "The payload's event_id, if it had a readable one."),
    Field("event_type", "string", "The payload's event_type, if it had a readable one."),
    Field("received_at", "timestamp", "The payload's received_at, if it had a valid one."),
)


@dataclass(frozen=True)
class Catalog:
    types: Mapping[str, EventType]

    def __iter__(self) -> Iterator[EventType]:
        return iter(self.types.values())

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> EventType | None:
        return self.types.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self.types)

    def routes(self) -> dict[str, EventType]:
        """HTTP GET route -> event type, for the seed-style routes."""
        return {route: et for et in self for route in et.routes}

    def tables(self, raw_topic: str = "events", dlq_topic: str = "events.dlq") -> list[Table]:
        """Every table the sink lands and Trino serves: one per type, plus the dead letters."""
        tables = [Table(et.table, f"{raw_topic}.{et.name}", et.columns, "received_at", ("event_id",))
                  for et in self]
        tables.append(Table(DEAD_LETTER_TABLE, dlq_topic, DEAD_LETTER_COLUMNS, "failed_at",
                            ("source_topic", "source_partition", "source_offset")))
        return tables


def _parse_field(source: str, name: str, spec: Any) -> Field:
    if not isinstance(spec, dict):
        raise CatalogError(f"{source}: field {name!r} must be a table, got {spec!r}")
    kind = spec.get("type")
    if kind not in TYPES:
        raise CatalogError(f"{source}: field {name!r} has type {kind!r}; expected one of {sorted(TYPES)}")
    if name in ENVELOPE_NAMES or name == PARTITION_COLUMN:
        raise CatalogError(f"{source}: field {name!r} is reserved (envelope or partition column)")
    if not name.isidentifier() or name.lower() != name:
        raise CatalogError(f"{source}: field name {name!r} must be a lower-case identifier")
    return Field(name, kind, str(spec.get("description", "")), bool(spec.get("required", False)))


def parse_schema(source: str, doc: Mapping[str, Any]) -> EventType:
    """Build an EventType from one parsed schema document; ``source`` names it in errors."""
    name = doc.get("event_type")
    table = doc.get("table")
    for key, value in (("event_type", name), ("table", table)):
        if not isinstance(value, str) or not value.isidentifier() or value.lower() != value:
            raise CatalogError(f"{source}: {key} must be a lower-case identifier, got {value!r}")
    if table == DEAD_LETTER_TABLE:
        raise CatalogError(f"{source}: table name {table!r} is reserved")
    http = doc.get("http", {})
    fields = tuple(_parse_field(source, n, s) for n, s in doc.get("fields", {}).items())
    return EventType(
        name=name,
        table=table,
        description=str(doc.get("description", "")),
        fields=fields,
        routes=tuple(http.get("routes", ())),
        response=str(http.get("response", "OK\n")),
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


def load_catalog(directory: str | Path | None = None) -> Catalog:
    """Load every ``*.toml`` schema in ``directory`` (default: the packaged schemas)."""
    directory = Path(directory) if directory else SCHEMA_DIR
    if directory == SCHEMA_DIR:
        return _packaged_catalog()
    return _load(directory)


@lru_cache(maxsize=1)
def _packaged_catalog() -> Catalog:
    return _load(SCHEMA_DIR)


def _load(directory: Path) -> Catalog:
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


# Validation -------------------------------------------------------------------------------------

def _describe(value: Any) -> str:
    kind = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 timestamp with a time zone, or None."""
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo is not None else None


def check_value(f: Field, value: Any) -> str | None:
    """None if ``value`` fits field ``f``, else a reason naming the field, expectation and value."""
    if value is None:
        return None if not f.required else f"field {f.name!r}: required, got null"
    ok = {
        "string": lambda v: isinstance(v, str),
        "long": lambda v: isinstance(v, int) and not isinstance(v, bool) and -(2**63) <= v < 2**63,
        "double": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool) and math.isfinite(v),
        "boolean": lambda v: isinstance(v, bool),
        "timestamp": lambda v: isinstance(v, str) and parse_timestamp(v) is not None,
    }[f.type](value)
    if ok:
        return None
    expected = "ISO-8601 timestamp with time zone" if f.type == "timestamp" else f.type
    return f"field {f.name!r}: expected {expected}, got {_describe(value)}"


def validate(event: Any, catalog: Catalog) -> list[str]:
    """Every problem with ``event`` against the catalog; an empty list means it is valid."""
    if not isinstance(event, dict):
        return [f"event must be a JSON object, got {_describe(event)}"]
    name = event.get("event_type")
    et = catalog.get(name) if isinstance(name, str) else None
    if et is None:
        return [f"unknown event_type {name!r}; known types: {', '.join(catalog.names)}"]
    errors = []
    for f in et.columns:
        if f.name not in event:
            if f.required:
                errors.append(f"field {f.name!r}: required, missing")
            continue
        problem = check_value(f, event[f.name])
        if problem:
            errors.append(problem)
    if isinstance(event.get("event_id"), str) and not 0 < len(event["event_id"]) <= 128:
        errors.append("field 'event_id': expected 1 to 128 characters")
    allowed = {f.name for f in et.columns}
    for key in event:
        if key not in allowed:
            errors.append(f"field {key!r}: not in the {et.name!r} schema (fields: {', '.join(sorted(allowed))})")
    return errors


def coerce_text(f: Field, text: str) -> Any:
    """Convert a query-string value to the field's type; leave it as text if it does not parse,
    so that validation reports it instead of the value being silently changed or dropped."""
    try:
        if f.type == "long":
            return int(text)
        if f.type == "double":
            return float(text)
    except ValueError:
        return text
    if f.type == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
