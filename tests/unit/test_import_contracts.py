"""`make lint` holds the architecture (docs/architecture.md): a stage imports only the core.

Each case copies the packages to a temporary directory, adds one import that breaks (or keeps) a
rule, and runs the same `lint-imports` that `make lint` runs, with the repository's contracts."""

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

from questlog.settings import REPO_ROOT

LINT_IMPORTS = Path(sys.executable).with_name("lint-imports")
ROOTS = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]


def test_make_lint_runs_the_import_contracts():
    recipe = subprocess.run(
        ["make", "-n", "-o", "install", "lint"], cwd=REPO_ROOT, capture_output=True, text=True, check=True
    ).stdout
    assert "lint-imports" in recipe, recipe


def _lint(tmp_path: Path, module: str | None = None, line: str = "") -> subprocess.CompletedProcess:
    for root in ROOTS:
        shutil.copytree(REPO_ROOT / root, tmp_path / root, ignore=shutil.ignore_patterns("__pycache__", "results"))
    shutil.copy(REPO_ROOT / "pyproject.toml", tmp_path / "pyproject.toml")
    if module:
        path = tmp_path / (module.replace(".", "/") + ".py")
        path.write_text(path.read_text() + f"\n{line}  # noqa\n")
    return subprocess.run(
        [str(LINT_IMPORTS), "--no-cache", "--no-logo"],
        cwd=tmp_path,
        env={"PYTHONPATH": str(tmp_path), "PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_the_packages_as_they_are_keep_every_contract(tmp_path):
    result = _lint(tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout


@pytest.mark.parametrize(
    ("module", "line", "broken"),
    [
        # the shape issue 22 found: the router taking a helper from `questlog status`
        ("faust_app.routing", "from ops.status import SERVICES", "faust_app.routing -> ops.status"),
        ("spark_sink.tables", "import ops.stack.runner", "spark_sink.tables -> ops.stack.runner"),
        ("producer.routes", "from ops import load", "producer.routes -> ops.load"),
        ("compactor.compact", "import benchmarks.report", "compactor.compact -> benchmarks.report"),
        ("producer.envelope", "import faust_app.routing", "producer.envelope -> faust_app.routing"),
        ("questlog.sql", "import ops.status", "questlog.sql -> ops.status"),
        ("questlog_client.tracker", "import pyspark", "questlog_client.tracker -> pyspark"),
    ],
)
def test_lint_fails_when_a_rule_is_broken(tmp_path, module, line, broken):
    result = _lint(tmp_path, module, line)
    assert result.returncode != 0, result.stdout
    assert "BROKEN" in result.stdout and broken in result.stdout, result.stdout
