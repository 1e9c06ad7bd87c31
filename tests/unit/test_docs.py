"""The README must describe the code as it is."""

import re

from questlog.settings import ENV_VARS, REPO_ROOT, Settings

README = (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_every_setting_is_documented_with_its_default():
    rows = dict(re.findall(r"^\| `(QUESTLOG_[A-Z_]+)` \| `([^`]*)` \|", README, re.M))
    assert set(rows) == set(ENV_VARS)
    defaults = Settings.from_env({}).to_env()
    for name, documented in rows.items():
        if name not in ("QUESTLOG_HOME", "QUESTLOG_CACHE", "QUESTLOG_CATALOG"):  # paths in this checkout
            assert defaults[name] == documented, name


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()
