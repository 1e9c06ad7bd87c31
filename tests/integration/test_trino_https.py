"""Trino over HTTPS with password authentication, on the running stack (ops/stack/trino_security.py):
its certificate is signed by the CA the stack made, every client must give a user's password,
and the access rules act on the authenticated user: the analyst reads, only the compactor's
user changes tables. Each refusal is Trino's own answer, beside the same request allowed."""

from __future__ import annotations

import stat

import pytest
import requests
from trino.exceptions import TrinoUserError

from ops.stack import trino_security
from questlog.sql import execute

pytestmark = pytest.mark.integration


def statement(settings, sql: str, auth=None, verify=None, user=None) -> requests.Response:
    """One POST /v1/statement, as a plain HTTP client (an attacker's curl) would send it."""
    return requests.post(
        f"https://{settings.trino_host}:{settings.trino_port}/v1/statement",
        data=sql,
        headers={"X-Trino-User": user or settings.trino_user},
        auth=auth,
        verify=settings.trino_ca_file if verify is None else verify,
        timeout=30,
    )


def test_without_a_password_or_with_a_wrong_one_trino_answers_401(live_settings):
    compactor = live_settings.compact_trino_user
    # claiming the compactor's name (the one that may change tables) is no longer enough
    assert statement(live_settings, "SELECT 1", user=compactor).status_code == 401
    assert statement(live_settings, "SELECT 1", auth=(compactor, "not-its-password")).status_code == 401
    analyst = live_settings.trino_password()
    assert statement(live_settings, "SELECT 1", auth=(compactor, analyst)).status_code == 401  # another's password
    ok = statement(live_settings, "SELECT 1", auth=(live_settings.trino_user, analyst))
    assert ok.status_code == 200 and "nextUri" in ok.json()


def test_only_https_with_the_stacks_ca(live_settings):
    with pytest.raises(requests.exceptions.SSLError, match="CERTIFICATE_VERIFY_FAILED"):
        statement(live_settings, "SELECT 1", verify=True)  # the system's CAs do not know it: it is TLS, ours
    with pytest.raises(requests.exceptions.ConnectionError):  # no plain HTTP on Trino's port
        requests.get(f"http://{live_settings.trino_host}:{live_settings.trino_port}/v1/info", timeout=10)


def test_the_analyst_reads_and_may_not_change_a_table(live_settings):
    assert execute(live_settings, "SELECT current_user")[1] == [[live_settings.trino_user]]
    assert execute(live_settings, "SELECT count(*) >= 0 FROM default_hits")[1] == [[True]]
    for change in (
        "INSERT INTO default_hits (event_id) VALUES ('x')",
        "DELETE FROM default_hits WHERE event_id = 'x'",
        "DROP TABLE default_hits",
        "CREATE TABLE intruder (a varchar)",
    ):
        with pytest.raises(TrinoUserError, match="Access Denied"):
            execute(live_settings, change)


def test_secrets_are_0600_and_the_password_file_holds_hashes(live_settings):
    directory = trino_security.secrets_dir(live_settings)
    assert stat.S_IMODE(directory.stat().st_mode) == 0o700
    for name in (*trino_security.users(live_settings), "shared-secret", "server.pem", "ca-key.pem"):
        assert stat.S_IMODE((directory / name).stat().st_mode) == 0o600, name
    db = live_settings.home_path / "conf" / "trino" / "password.db"
    assert stat.S_IMODE(db.stat().st_mode) == 0o600
    text = db.read_text()
    for user in trino_security.users(live_settings):
        assert (directory / user).read_text().strip() not in text
        assert f"{user}:{trino_security.PBKDF2_ITERATIONS}:" in text
