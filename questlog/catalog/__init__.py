"""The event catalog: one schema per event type, the single source of truth.

Every stage reads it: the collector for its routes and known types, the router to validate, the
sink for columns, and the Trino registration for tables. Schemas are written in
``schemas/*.toml``, one file per event type; `questlog catalog deploy` checks that a change is
compatible and compiles them into the deployed catalog (``catalog.json`` by default, see
QUESTLOG_CATALOG), which the running stages read and reload. Nothing else names an event type.

The package is split by job, behind these names: `model` (types, envelope, tables, the catalog),
`files` (TOML schemas and the deployed JSON), `validation` (events against a type),
`querystring` (the collector's GET routes), `evolution` (compatible changes), `watch` (reloading
a deployed file), `docs` (the generated reference).
"""

from __future__ import annotations

from questlog.catalog.files import (  # noqa: F401
    DEPLOYED_CATALOG,
    SCHEMA_DIR,
    build_catalog,
    catalog_from_json,
    catalog_to_json,
    load_catalog,
    load_schemas,
    parse_schema,
)
from questlog.catalog.model import (  # noqa: F401
    CATALOG_FORMAT,
    DEAD_LETTER_COLUMNS,
    DEAD_LETTER_TABLE,
    ENVELOPE,
    ENVELOPE_NAMES,
    EVENT_ID_RULE,
    EVENT_KEY,
    PARTITION_COLUMN,
    SESSION_COLUMNS,
    SESSION_TYPE,
    SESSIONS_TABLE,
    TYPES,
    Catalog,
    CatalogError,
    EventType,
    Field,
    Table,
    dead_letter_key,
    event_key,
    typed_topic,
    valid_event_id,
)
from questlog.catalog.querystring import (  # noqa: F401
    coerce_text,
)
from questlog.catalog.validation import (  # noqa: F401
    MAX_NAMED_UNKNOWN,
    compile_validator,
    parse_timestamp,
    short_name,
    validate,
)
