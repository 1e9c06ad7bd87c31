"""Running SQL on Trino with Questlog's settings: the one place that opens a connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import trino
import trino.auth

from questlog.settings import Settings


def connect(settings: Settings, user: str | None = None) -> trino.dbapi.Connection:
    """A connection as ``user``, by default QUESTLOG_TRINO_USER, a reader: only the compactor's user
    (QUESTLOG_COMPACT_TRINO_USER) may change tables (compose/trino/iceberg-rules.json).

    QUESTLOG_TRINO_URL gives the scheme (https: TLS, verified against the system's CAs or
    REQUESTS_CA_BUNDLE) and may carry ``user:password@``: Trino's password authentication, as that
    user (who then is every statement's user: Trino's rules decide what it may do)."""
    credentials = settings.trino_credentials
    auth = None
    if credentials and credentials[1] is not None:
        auth = trino.auth.BasicAuthentication(credentials[0], credentials[1])
        user = credentials[0]
    elif credentials:
        user = user or credentials[0]
    return trino.dbapi.connect(
        host=settings.trino_host,
        port=settings.trino_port,
        http_scheme=settings.trino_scheme,
        auth=auth,
        user=user or settings.trino_user,
        catalog=settings.trino_catalog,
        schema=settings.trino_schema,
    )


def execute(
    settings: Settings, statement: str, params: Sequence[Any] = (), user: str | None = None
) -> tuple[list[str], list[list]]:
    """Column names and rows of one statement."""
    conn = connect(settings, user)
    try:
        cur = conn.cursor()
        if params:
            cur.execute(statement, list(params))
        else:
            cur.execute(statement)
        rows = cur.fetchall()
        return [col[0] for col in cur.description or []], rows
    finally:
        conn.close()
