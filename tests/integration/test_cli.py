"""The CLI's query commands against the real Trino."""

import subprocess
import sys
from pathlib import Path

import pytest
from click.testing import CliRunner

from ops.cli import main

pytestmark = pytest.mark.integration


def test_query_prints_a_header_and_rows(live_settings):
    result = CliRunner().invoke(main, ["query", "SHOW TABLES"], env=live_settings.to_env())
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0] == "Table"
    assert {"sword_purchases", "guild_joins", "default_hits", "dead_letters"} <= set(lines[1:])


def test_query_reports_a_bad_statement_as_an_error(live_settings):
    result = CliRunner().invoke(main, ["query", "SELECT nope FROM sword_purchases"], env=live_settings.to_env())
    assert result.exit_code == 1
    assert "Column 'nope' cannot be resolved" in result.output


def test_sql_runs_trinos_own_cli_on_the_events_schema(live_settings):
    questlog = Path(sys.executable).parent / "questlog"
    result = subprocess.run(
        [str(questlog), "sql", "--execute", "SELECT count(*) FROM default_hits WHERE false"],
        env={**live_settings.to_env(), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == '"0"'
