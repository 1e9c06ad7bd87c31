"""The event catalog: one schema per event type, the single source of truth.

Every stage reads it: the collector for its routes and known types, the router to validate, the
sink for columns, and the Trino registration for tables. Schemas are written in
``schemas/*.toml``, one file per event type; `questlog catalog deploy` checks that a change is
compatible and compiles them into the deployed catalog (``catalog.json`` by default, see
QUESTLOG_CATALOG), which the running stages read and reload. Nothing else names an event type.
"""

from __future__ import annotations

import json
import math
import re
import tomllib
from dataclasses import dataclass, field
from functools import cached_property
from datetime import datetime
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator, Mapping

SCHEMA_DIR = Path(__file__).resolve().parent / "schemas"
DEPLOYED_CATALOG = Path(__file__).resolve().parent / "catalog.json"
CATALOG_FORMAT = 1

# Catalog type -> (Trino type, Spark SQL type)
TYPES: Mapping[str, tuple[str, str]] = {
    "string": ("varchar", "string"),
    "long": ("bigint", "bigint"),
    "double": ("double", "double"),
    "boolean": ("boolean", "boolean"),
    "timestamp": ("timestamp(3)", "timestamp"),
}

PARTITION_COLUMN = "dt"



def typed_topic(raw_topic: str, type_name: str) -> str:
    """The topic the router writes events of ``type_name`` to: ``<raw topic>.<type>``."""
    return f"{raw_topic}.{type_name}"

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


# Fields every accepted event carries.
ENVELOPE: tuple[Field, ...] = (
    Field("event_id", "string", "Id of the event, unique within its `source`: 1 to 128 characters of "
          "`A-Z a-z 0-9 . _ : -`, made by the collector (a UUID) or sent by the client so that its retries "
          "are recognised. (`source`, `event_id`) is the dedupe key.", True),
    Field("source", "string", "Who sent the event: the source name its write key maps to "
          "(QUESTLOG_WRITE_KEYS), `default` when write keys are off; set by the collector only. Empty "
          "for events accepted before sources existed."),
    Field("event_type", "string", "The catalog type of the event.", True),
    Field("received_at", "timestamp", "When the collector accepted the event (server clock, UTC); the `dt` "
          "partition is its UTC date.", True),
    Field("client_ts", "timestamp", "When the client says the event happened (client clock, with time zone); "
          "optional, never used for partitioning."),
    Field("user_id", "string", "The player: the event's own `user_id`, else the first label of the Host "
          "header when it names a host under a domain (`user1.comcast.com` -> `user1`)."),
    Field("schema_version", "long", "The version of this type's schema that validated the event (set by "
          "the router)."),
    Field("host", "string", "The request's Host header."),
    Field("user_agent", "string", "The request's User-Agent header."),
    Field("accept", "string", "The request's Accept header."),
)
ENVELOPE_NAMES = frozenset(f.name for f in ENVELOPE)

# An event's identity: two sources may use the same event_id without colliding. The sink drops
# repeats by it, `questlog replay` skips what has landed by it.
EVENT_KEY: tuple[str, ...] = ("source", "event_id")
EVENT_ID_RULE = "1 to 128 characters of A-Z a-z 0-9 . _ : -"
_EVENT_ID = re.compile(r"[A-Za-z0-9._:-]{1,128}")


def valid_event_id(value: object) -> bool:
    return type(value) is str and _EVENT_ID.fullmatch(value) is not None


def event_key(source: str | None, event_id: str) -> bytes:
    """The Kafka key of an event: ``source/event_id`` (neither may contain a ``/``), or the bare
    event_id for an event from before sources existed."""
    return (f"{source}/{event_id}" if source else event_id).encode()


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
    version: int = 1

    @property
    def columns(self) -> tuple[Field, ...]:
        return ENVELOPE + self.fields

    @cached_property
    def timestamp_fields(self) -> tuple[str, ...]:
        """The names of its timestamp columns (the router rewrites them in one spelling)."""
        return tuple(f.name for f in self.columns if f.type == "timestamp")

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
    _validators: dict = field(default_factory=dict, init=False, repr=False, compare=False)

    def __iter__(self) -> Iterator[EventType]:
        return iter(self.types.values())

    def __contains__(self, name: object) -> bool:
        return name in self.types

    def get(self, name: str) -> EventType | None:
        return self.types.get(name)

    @property
    def names(self) -> list[str]:
        return sorted(self.types)

    @cached_property
    def routes(self) -> Mapping[str, EventType]:
        """HTTP GET route -> event type, for the seed-style routes."""
        return {route: et for et in self for route in et.routes}

    def tables(self, raw_topic: str = "events", dlq_topic: str = "events.dlq") -> list[Table]:
        """Every table the sink lands and Trino serves: one per type, plus the dead letters."""
        clash = [et.name for et in self if typed_topic(raw_topic, et.name) in (dlq_topic, raw_topic)]
        if clash:
            raise CatalogError(f"event type {clash[0]!r} would write to the topic {dlq_topic!r} or "
                               f"{raw_topic!r}; choose another name")
        tables = [Table(et.table, typed_topic(raw_topic, et.name), et.columns, "received_at", EVENT_KEY)
                  for et in self]
        tables.append(Table(DEAD_LETTER_TABLE, dlq_topic, DEAD_LETTER_COLUMNS, "failed_at",
                            ("source_topic", "source_partition", "source_offset")))
        return tables

    def topics(self, raw_topic: str = "events", dlq_topic: str = "events.dlq") -> list[str]:
        """Every topic of the pipeline, for every caller that creates or lists them: the raw
        topic, one per type (`typed_topic`), the dead letters."""
        return [raw_topic] + [t.topic for t in self.tables(raw_topic, dlq_topic)]

    def validator(self, name: str) -> Callable[[dict], list[str]]:
        """The compiled validator of one (known) event type, built once per catalog."""
        validate_event = self._validators.get(name)
        if validate_event is None:
            validate_event = self._validators[name] = compile_validator(self.types[name])
        return validate_event


# Schema sources: TOML files (what people edit) and the deployed JSON (what stages run) ----------

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
        raise CatalogError(f"{source}: table name {table!r} is reserved (dead letters)")
    if name == "dlq":
        raise CatalogError(f"{source}: event_type 'dlq' is reserved (its topic is the dead letters')")
    version = doc.get("version", 1)
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise CatalogError(f"{source}: version must be a positive integer, got {version!r}")
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
    doc = {"format": CATALOG_FORMAT, "types": [{
        "event_type": et.name, "version": et.version, "table": et.table, "description": et.description,
        "http": {"routes": list(et.routes), "response": et.response},
        "fields": [{"name": f.name, "type": f.type, "required": f.required, "description": f.description}
                   for f in et.fields],
    } for et in catalog]}
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
        raise CatalogError(f"cannot read the deployed catalog {path}: {exc.strerror}; "
                           "create it with `questlog catalog deploy`") from None
    return catalog_from_json(text, str(path))


# Validation -------------------------------------------------------------------------------------

def _describe(value: Any) -> str:
    kind = {str: "string", bool: "boolean", int: "integer", float: "number", list: "array",
            dict: "object", type(None): "null"}.get(type(value), type(value).__name__)
    if isinstance(value, (str, list, dict)) and len(value) > 40:  # no repr of a megabyte value
        value = value[:40] if isinstance(value, (str, list)) else dict(list(value.items())[:4])
    text = repr(value)
    if len(text) > 40:
        text = text[:37] + "..."
    return f"{kind} {text}"


def short_name(name: str, limit: int = 64) -> str:
    """A field name as it appears in a reason: quoted, and cut if it is long, so that a reason
    stays short whatever a client sends."""
    if len(name) <= limit:
        return repr(name)
    return f"{name[:limit]!r}... ({len(name)} characters)"


# At most this many names of unknown fields are listed in one reason (the count says the rest).
MAX_NAMED_UNKNOWN = 10


def parse_timestamp(value: str) -> datetime | None:
    """An ISO-8601 timestamp with a time zone, or None."""
    try:
        ts = datetime.fromisoformat(value)
    except (TypeError, ValueError):
        return None
    return ts if ts.tzinfo is not None else None


_CHECKS: Mapping[str, Callable[[Any], bool]] = {
    "string": lambda v: type(v) is str,
    "long": lambda v: type(v) is int and -(2**63) <= v < 2**63,
    "double": lambda v: (type(v) is float and math.isfinite(v)) or type(v) is int,
    "boolean": lambda v: type(v) is bool,
    "timestamp": lambda v: type(v) is str and parse_timestamp(v) is not None,
}


# Values of these exact Python types need no further check for the field type (the hot path).
_EXACT: Mapping[str, frozenset[type]] = {"string": frozenset({str}), "boolean": frozenset({bool})}


def _mismatch(f: Field, value: Any) -> str:
    expected = "ISO-8601 timestamp with time zone" if f.type == "timestamp" else f.type
    return f"field {f.name!r}: expected {expected}, got {_describe(value)}"


def compile_validator(et: EventType) -> Callable[[dict], list[str]]:
    """A function checking one event (a dict) of type ``et``: every problem, or an empty list.

    The per-field checks, the required set and the allowed names are computed here once, so
    validating an event is a few dict look-ups and type checks per field."""
    checks = {f.name: (f, _CHECKS[f.type], _EXACT.get(f.type, frozenset())) for f in et.columns}
    required = tuple(f.name for f in et.columns if f.required)
    allowed = ", ".join(sorted(checks))

    def validate_event(event: dict) -> list[str]:
        errors = [f"field {name!r}: required, missing" for name in required if name not in event]
        unknown: list[str] = []
        for key, value in event.items():
            entry = checks.get(key)
            if entry is None:
                unknown.append(key)
            elif type(value) in entry[2]:
                pass
            elif value is None:
                if entry[0].required:
                    errors.append(f"field {key!r}: required, got null")
            elif not entry[1](value):
                errors.append(_mismatch(entry[0], value))
        if unknown:  # one reason for all of them: its size does not grow with what a client sends
            named = ", ".join(short_name(k) for k in unknown[:MAX_NAMED_UNKNOWN])
            if len(unknown) == 1:
                errors.append(f"field {named}: not in the {et.name!r} schema (fields: {allowed})")
            else:
                more = f" and {len(unknown) - MAX_NAMED_UNKNOWN} more" if len(unknown) > MAX_NAMED_UNKNOWN else ""
                errors.append(f"{len(unknown)} fields not in the {et.name!r} schema: {named}{more} "
                              f"(fields: {allowed})")
        event_id = event.get("event_id")
        if type(event_id) is str and not valid_event_id(event_id):
            errors.append(f"field 'event_id': expected {EVENT_ID_RULE}, got {_describe(event_id)}")
        return errors

    return validate_event


def validate(event: Any, catalog: Catalog) -> list[str]:
    """Every problem with ``event`` against the catalog; an empty list means it is valid."""
    if not isinstance(event, dict):
        return [f"event must be a JSON object, got {_describe(event)}"]
    name = event.get("event_type")
    if not isinstance(name, str) or name not in catalog.types:
        shown = short_name(name) if isinstance(name, str) else "None" if name is None else _describe(name)
        return [f"unknown event_type {shown}; known types: {', '.join(catalog.names)}"]
    return catalog.validator(name)(event)


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
