"""The catalog's model: field types, the envelope every event carries, event types, tables and
the catalog itself (which topics and tables it makes)."""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from functools import cached_property

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
PII_MODES = ("hash", "drop", "ip")  # a field's `pii` (questlog/privacy.py)


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
    # personal data (questlog/privacy.py): "hash" (a keyed hash), "drop" (never stored), "ip" (an
    # address cut to its network); None: stored as sent
    pii: str | None = None

    @property
    def trino_type(self) -> str:
        return TYPES[self.type][0]

    @property
    def spark_type(self) -> str:
        return TYPES[self.type][1]


# Fields every accepted event carries.
ENVELOPE: tuple[Field, ...] = (
    Field(
        "event_id",
        "string",
        "Id of the event, unique within its `source`: 1 to 128 characters of "
        "`A-Z a-z 0-9 . _ : -`, made by the collector (a UUID) or sent by the client so that its retries "
        "are recognised. (`source`, `event_id`) is the dedupe key.",
        True,
    ),
    Field(
        "source",
        "string",
        "Who sent the event: the source name its write key maps to "
        "(QUESTLOG_WRITE_KEYS), `default` when write keys are off; set by the collector only. Empty "
        "for events accepted before sources existed.",
    ),
    Field("event_type", "string", "The catalog type of the event.", True),
    Field(
        "received_at",
        "timestamp",
        "When the collector accepted the event (server clock, UTC); the `dt` partition is its UTC date.",
        True,
    ),
    Field(
        "client_ts",
        "timestamp",
        "When the client says the event happened (client clock, with time zone); "
        "optional, never used for partitioning.",
    ),
    Field(
        "user_id",
        "string",
        "The player: the event's own `user_id`, else the first label of the Host "
        "header when it names a host under a domain (`user1.comcast.com` -> `user1`).",
    ),
    Field("schema_version", "long", "The version of this type's schema that validated the event (set by the router)."),
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
    return (f"{source}{EVENT_KEY_SEPARATOR}{event_id}" if source else event_id).encode()


def dead_letter_key(topic: str, partition: int, offset: int, index: int | None = None) -> bytes:
    """The Kafka key of a dead letter: where its payload was read, ``topic:partition:offset``, and
    ``:index`` for an event of a record that held an array of them."""
    parts = (topic, str(partition), str(offset)) + (() if index is None else (str(index),))
    return DEAD_LETTER_KEY_SEPARATOR.join(parts).encode()


# How the router joins a table's key columns into its records' Kafka key: the sink takes its dedupe
# key from there (no JSON parse), so a topic's separator is one none of its key values contains.
EVENT_KEY_SEPARATOR = "/"
DEAD_LETTER_KEY_SEPARATOR = ":"  # Kafka topic names have no ':'


@dataclass(frozen=True)
class Table:
    """A Trino table fed from one Kafka topic: its columns, in order, without the partition."""

    name: str
    topic: str
    columns: tuple[Field, ...]
    time_column: str  # the timestamp the date partition is taken from
    key: tuple[str, ...]  # columns that identify a row; duplicates by key are removed
    key_separator: str = EVENT_KEY_SEPARATOR  # the records' Kafka key is the key columns joined by this (event_key)


@dataclass(frozen=True)
class EventType:
    name: str
    table: str
    description: str
    fields: tuple[Field, ...]
    routes: tuple[str, ...] = ()
    response: str = "OK\n"
    version: int = 1
    retention_days: int | None = None  # days a row is kept after its day (dt); None: forever

    @property
    def columns(self) -> tuple[Field, ...]:
        return ENVELOPE + self.fields

    @cached_property
    def pii_rules(self) -> tuple[tuple[str, str], ...]:
        """(field, mode) of its personal fields, for the router (questlog.privacy.pseudonymise)."""
        return tuple((f.name, f.pii) for f in self.fields if f.pii)

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
    # added after the others, in this order (tables created before them gain them at the end)
    Field(
        "source_index", "long", "Its position in the record's array of events (null when the record held one event)."
    ),
    Field(
        "reason_code",
        "string",
        "Why, as a code of a small fixed vocabulary (questlog.deadletters.REASON_CODES: not_json, "
        "wrong_type, missing_field, ...); null for dead letters written before the column existed.",
    ),
)


# The sessions table: what agent ``sessions`` of the router (faust_app.sessions) emits as a player's
# session closes. Not an event type: no client can send one (the collector answers 400 to an
# unknown event_type, the router dead-letters it), and no catalog type may take its name or topic.
SESSION_TYPE = "sessions"
SESSIONS_TABLE = "sessions"
SESSION_COLUMNS: tuple[Field, ...] = (
    Field("source", "string", "The player's source (see the events' `source`)."),
    Field("user_id", "string", "The player (the events' `user_id`).", True),
    Field(
        "session_id",
        "string",
        "Id of the session: a hash of the player and the session's first event id (the same session "
        "emitted twice has the same id; (`source`, `session_id`) is the dedupe key).",
        True,
    ),
    Field("session_start", "timestamp", "Event time of its first event (UTC); the `dt` partition is its date.", True),
    Field("session_end", "timestamp", "Event time of its last event (UTC).", True),
    Field("duration_s", "double", "session_end - session_start, in seconds.", True),
    Field("events", "long", "Events in the session.", True),
    Field("events_by_type", "string", 'Events by event type, as JSON: `{"purchase_sword": 3}`.', True),
    Field("first_event_id", "string", "event_id of its first event (by event time).", True),
    Field("last_event_id", "string", "event_id of its last event (by event time).", True),
    Field("late_events", "long", "Events that came after the partition's watermark had passed them.", True),
    Field("closed_at", "timestamp", "When the router closed it (router clock, UTC).", True),
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
            raise CatalogError(
                f"event type {clash[0]!r} would write to the topic {dlq_topic!r} or {raw_topic!r}; choose another name"
            )
        reserved = [
            et.name for et in self if et.name == SESSION_TYPE or et.table in (SESSIONS_TABLE, DEAD_LETTER_TABLE)
        ]
        if reserved:
            raise CatalogError(
                f"event type {reserved[0]!r}: the type {SESSION_TYPE!r} and the tables {SESSIONS_TABLE!r} and "
                f"{DEAD_LETTER_TABLE!r} are Questlog's own; choose another name"
            )
        tables = [
            Table(et.table, typed_topic(raw_topic, et.name), et.columns, "received_at", EVENT_KEY, EVENT_KEY_SEPARATOR)
            for et in self
        ]
        tables.append(
            Table(
                DEAD_LETTER_TABLE,
                dlq_topic,
                DEAD_LETTER_COLUMNS,
                "failed_at",
                ("source_topic", "source_partition", "source_offset", "source_index"),
                DEAD_LETTER_KEY_SEPARATOR,
            )
        )
        tables.append(
            Table(
                SESSIONS_TABLE,
                typed_topic(raw_topic, SESSION_TYPE),
                SESSION_COLUMNS,
                "session_start",
                ("source", "session_id"),
                EVENT_KEY_SEPARATOR,
            )
        )
        return tables

    def topics(self, raw_topic: str = "events", dlq_topic: str = "events.dlq") -> list[str]:
        """Every topic of the pipeline, for every caller that creates or lists them: the raw
        topic, one per type (`typed_topic`), the dead letters."""
        return [raw_topic] + [t.topic for t in self.tables(raw_topic, dlq_topic)]

    def validator(self, name: str) -> Callable[[dict], list[str]]:
        """The compiled validator of one (known) event type, built once per catalog."""
        validate_event = self._validators.get(name)
        if validate_event is None:
            from questlog.catalog.validation import compile_validator  # validation imports this module

            validate_event = self._validators[name] = compile_validator(self.types[name])
        return validate_event
