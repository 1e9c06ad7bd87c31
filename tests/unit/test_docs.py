"""The README must describe the code as it is."""

import re

from questlog.settings import ENV_VARS, REPO_ROOT, Settings

README = (REPO_ROOT / "README.md").read_text()


def test_readme_opens_with_the_two_commands():
    first_block = README.split("```")[1]
    assert "make run" in first_block and "make test" in first_block


def test_the_readme_is_read_in_ten_minutes():
    assert len(README.splitlines()) <= 250
    for page in ("architecture", "configuration", "operations", "performance", "events"):
        assert f"(docs/{page}.md)" in README, page


def test_every_readme_link_into_the_repo_resolves():
    for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", README):
        assert (REPO_ROOT / target).exists(), target
    for page in (REPO_ROOT / "docs").glob("*.md"):
        for target in re.findall(r"\]\(([^)#:]+)(?:#[^)]*)?\)", page.read_text()):
            assert (page.parent / target).exists(), f"{page.name}: {target}"


def test_every_setting_is_documented_with_its_default():
    configuration = (REPO_ROOT / "docs" / "configuration.md").read_text()
    rows = dict(re.findall(r"^\| `(QUESTLOG_[A-Z_]+)` \| `([^`]*)` \|", configuration, re.M))
    assert set(rows) == set(ENV_VARS)
    defaults = Settings.from_env({}).to_env()
    for name, documented in rows.items():
        if name not in ("QUESTLOG_HOME", "QUESTLOG_CACHE", "QUESTLOG_CATALOG"):  # paths in this checkout
            assert defaults[name] == documented, name


def test_ci_runs_the_readme_test_command():
    assert "make test" in (REPO_ROOT / ".ci" / "run").read_text()


# docs/architecture.md: the map of the code. What it names must exist, and it must name every module.

ARCHITECTURE = (REPO_ROOT / "docs" / "architecture.md").read_text()
CODE_PACKAGES = ("questlog", "producer", "faust_app", "spark_sink", "compactor", "ops", "questlog_client")
ROOTS = (*CODE_PACKAGES, "benchmarks", "compose", "docs", "tests")
# Variables that are not settings: the test stack's shift and home (tests/conftest.py reads them).
NOT_SETTINGS = {"QUESTLOG_TEST_PORT_OFFSET": "questlog/settings.py"}


def _quoted(text: str) -> list[str]:
    return re.findall(r"`([^`\n]+)`", text)


def test_the_architecture_page_is_linked_from_the_readme():
    assert "(docs/architecture.md)" in README


def test_every_path_the_architecture_page_names_exists():
    paths = [q for q in _quoted(ARCHITECTURE) if q.split("/")[0] in ROOTS and "/" in q and " " not in q]
    assert len(paths) > 40, paths  # the page names its modules by path
    for path in paths:
        if "<" in path:  # a placeholder, e.g. schemas/<type>.toml: its folder exists
            path = path.rsplit("/", 1)[0]
        if "*" in path:
            assert list(REPO_ROOT.glob(path)), path
        else:
            assert (REPO_ROOT / path).exists(), path


def test_every_module_is_on_the_architecture_page():
    named = set(_quoted(ARCHITECTURE))
    for package in CODE_PACKAGES:
        for module in sorted((REPO_ROOT / package).rglob("*.py")):
            rel = module.relative_to(REPO_ROOT).as_posix()
            if module.name == "__init__.py":
                assert rel in named or rel[: -len("__init__.py")] in named, rel  # the file or its package
            else:
                assert rel in named, f"{rel} is not in docs/architecture.md"


def test_every_dotted_name_on_the_architecture_page_resolves():
    import importlib

    names = [q for q in _quoted(ARCHITECTURE) if re.fullmatch(r"(?:{})(?:\.\w+)+".format("|".join(CODE_PACKAGES)), q)]
    assert len(names) > 20, names
    for name in names:
        parts = name.split(".")
        for cut in range(len(parts), 0, -1):  # the longest importable prefix, then attributes
            module = ".".join(parts[:cut])
            try:
                obj = importlib.import_module(module)
            except ModuleNotFoundError as exc:
                if not (module == exc.name or module.startswith(f"{exc.name}.")):
                    raise  # the module exists but fails to import
                continue
            for attr in parts[cut:]:
                assert hasattr(obj, attr), f"{name}: no {attr!r}"
                obj = getattr(obj, attr)
            break
        else:
            raise AssertionError(f"{name}: no such module")


def test_every_setting_the_architecture_page_names_is_a_setting():
    named = set(re.findall(r"\bQUESTLOG_[A-Z_]+\b", ARCHITECTURE))
    assert named, "the page names no setting"
    for name in named - set(ENV_VARS):
        assert name in NOT_SETTINGS, f"{name} is not in questlog.settings.ENV_VARS"
        assert name in (REPO_ROOT / NOT_SETTINGS[name]).read_text(), name


def _contracts() -> dict[str, dict]:
    import tomllib

    config = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]
    return {c["id"]: c for c in config["contracts"]}


def test_the_architecture_page_draws_the_packages_lint_holds():
    """The page's packages table is the import contracts of `make lint`: the same core, the same
    stages, the same tools above them, and every root package of the contracts is on it."""
    rows = dict(re.findall(r"^\| `(\w+)/` \| (\w+) \|", ARCHITECTURE, re.M))
    contracts = _contracts()
    stages = contracts["stages-import-only-the-core"]["source_modules"]
    assert sorted(p for p, layer in rows.items() if layer == "stage") == sorted(stages)
    assert sorted(contracts["stages-side-by-side"]["modules"]) == sorted(stages)
    assert [p for p, layer in rows.items() if layer == "core"] == contracts["core-at-the-bottom"]["source_modules"]
    above = {p for p, layer in rows.items() if layer in ("tools", "client")}
    assert above == set(contracts["stages-import-only-the-core"]["forbidden_modules"])
    import tomllib

    roots = tomllib.loads((REPO_ROOT / "pyproject.toml").read_text())["tool"]["importlinter"]["root_packages"]
    assert set(rows) == set(roots)
    for package in rows:
        assert (REPO_ROOT / package / "__init__.py").exists(), package


def test_the_architecture_page_says_where_each_kind_of_change_goes():
    headings = re.findall(r"^## (.+)$", ARCHITECTURE, re.M)
    for kind in ("event type", "stage", "service", "setting"):
        assert any(kind in h for h in headings if h.startswith("Adding")), kind
