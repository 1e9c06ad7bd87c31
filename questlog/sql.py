"""Running SQL on Trino with Questlog's settings: the one place that opens a connection."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import requests
import trino
import trino.auth

from questlog.settings import Settings


def connect(settings: Settings, user: str | None = None) -> trino.dbapi.Connection:
    """A connection as ``user``, by default QUESTLOG_TRINO_USER, a reader: only the compactor's user
    (QUESTLOG_COMPACT_TRINO_USER) may change tables (compose/trino/iceberg-rules.json).

    QUESTLOG_TRINO_URL gives the scheme (https: TLS, verified against QUESTLOG_TRINO_CA, the local
    stack's CA, or the system's CAs) and may carry ``user:password@``: Trino's password
    authentication, as that user (who then is every statement's user: Trino's rules decide what it
    may do). Without one, over https, the user's password is read from its file
    (QUESTLOG_TRINO_PASSWORD_FILE, the local stack's `$QUESTLOG_HOME/secrets/trino/<user>`)."""
    credentials = settings.trino_credentials
    if credentials and credentials[1] is not None:
        user = credentials[0]  # a password in the URL: that user runs every statement
    user = user or (credentials[0] if credentials else None) or settings.trino_user
    password = settings.trino_password(user) if settings.trino_scheme == "https" else None
    session = None
    if settings.trino_ca_file:  # Trino's own CA: REQUESTS_CA_BUNDLE in the environment must not replace it
        session = requests.Session()
        session.verify = settings.trino_ca_file
        session.trust_env = False
    return trino.dbapi.connect(
        host=settings.trino_host,
        port=settings.trino_port,
        http_scheme=settings.trino_scheme,
        auth=trino.auth.BasicAuthentication(user, password) if password is not None else None,
        user=user,
        catalog=settings.trino_catalog,
        schema=settings.trino_schema,
        verify=settings.trino_ca_file or True,
        http_session=session,
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
