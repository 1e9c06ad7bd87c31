"""Catalog safety: a deployed catalog every stage can read, and stages that remember the last catalog
they accepted (per QUESTLOG_HOME) and refuse, at start as while running, a malformed or
incompatible file, keeping the last good one."""

import json
import logging
import os
import shutil
import stat
import time

import pytest
from click.testing import CliRunner

from ops.cli import main
from questlog.catalog import DEPLOYED_CATALOG, SCHEMA_DIR, CatalogError, catalog_to_json, load_catalog
from questlog.catalog.evolution import IncompatibleChange, deploy
from questlog.catalog.watch import CatalogSource, last_good_path


def with_enchantment() -> str:
    """The deployed catalog plus a compatible change: an optional field, version bumped."""
    doc = json.loads(DEPLOYED_CATALOG.read_text())
    sword = next(t for t in doc["types"] if t["event_type"] == "purchase_sword")
    sword["version"] += 1
    sword["fields"].append({"name": "enchantment", "type": "string", "required": False, "description": ""})
    return json.dumps(doc)


def without_level_up() -> str:
    """An incompatible change, written by hand: a type removed."""
    doc = json.loads(DEPLOYED_CATALOG.read_text())
    doc["types"] = [t for t in doc["types"] if t["event_type"] != "level_up"]
    return json.dumps(doc)


MALFORMED = '{"format": 1, "types": [ {"event_type": "purchase_sword", '  # cut off mid-write


@pytest.fixture
def target(tmp_path):
    path = tmp_path / "deployed" / "catalog.json"
    path.parent.mkdir()
    shutil.copy(DEPLOYED_CATALOG, path)
    return path


@pytest.fixture
def home(tmp_path):
    return tmp_path / "home"


def rewrite(path, text):
    time.sleep(0.01)  # a new mtime, as a later write has
    path.write_text(text)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


# deploy: readable by all -------------------------------------------------------------------------


def test_deploy_writes_a_catalog_readable_by_all(tmp_path, target, home):
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    (schemas / "open_chest.toml").write_text(
        'event_type = "open_chest"\nversion = 1\ntable = "chest_openings"\n'
        'description = "A chest."\n[fields.gold]\ntype = "long"\n'
    )
    old_umask = os.umask(0o077)  # even for a user whose files are private by default
    try:
        result = CliRunner().invoke(
            main,
            ["catalog", "deploy", "--schemas", str(schemas)],
            env={"QUESTLOG_CATALOG": str(target), "QUESTLOG_HOME": str(home)},
        )
    finally:
        os.umask(old_umask)
    assert result.exit_code == 0, result.output
    assert "new type open_chest" in result.output
    assert "open_chest" in load_catalog(target)
    assert mode(target) == 0o644
    assert [p.name for p in target.parent.iterdir()] == ["catalog.json"]  # no temporary file left


def test_deploy_checks_against_what_the_stages_accepted_and_replaces_a_malformed_file(tmp_path, target, home):
    CatalogSource(target, home=home)  # a stage accepted the deployed catalog
    rewrite(target, MALFORMED)
    _, changes = deploy(SCHEMA_DIR, target, home=home)  # the schemas, unchanged: compatible
    assert load_catalog(target) == load_catalog(DEPLOYED_CATALOG)
    assert changes == []

    # A hand-written file without level_up; schemas without it match that file, not the stages.
    rewrite(target, without_level_up())
    schemas = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, schemas)
    (schemas / "level_up.toml").unlink()
    with pytest.raises(IncompatibleChange, match="level_up: the type was removed"):
        deploy(schemas, target, home=home)
    assert "level_up" not in load_catalog(target)  # nothing deployed


# A stage's memory ---------------------------------------------------------------------------------


def test_a_stage_remembers_the_catalog_it_accepted(target, home):
    source = CatalogSource(target, home=home)
    memory = last_good_path(home)
    assert memory == home / "catalog" / "last-good.json"
    assert load_catalog(memory) == source.get() == load_catalog(target)
    assert mode(memory) == 0o644

    rewrite(target, with_enchantment())
    assert source.refresh().types["purchase_sword"].field("enchantment") is not None
    assert load_catalog(memory).types["purchase_sword"].field("enchantment") is not None


def test_the_memory_defaults_to_questlog_home(target, home, monkeypatch):
    monkeypatch.setenv("QUESTLOG_HOME", str(home))
    CatalogSource(target)
    assert last_good_path(home).exists()


# At start -----------------------------------------------------------------------------------------


def test_a_stage_starting_on_a_malformed_file_runs_on_the_last_good_one(target, home, caplog):
    CatalogSource(target, home=home)
    rewrite(target, MALFORMED)
    with caplog.at_level(logging.ERROR):
        source = CatalogSource(target, home=home)  # a restart: no crash, so no crash loop
    assert source.get() == load_catalog(DEPLOYED_CATALOG)
    assert "catalog refused, running on the last one accepted" in caplog.text
    assert "not valid JSON" in caplog.text
    assert load_catalog(last_good_path(home)) == load_catalog(DEPLOYED_CATALOG)  # the memory is kept


def test_a_stage_starting_on_an_incompatible_file_runs_on_the_last_good_one(target, home, caplog):
    CatalogSource(target, home=home)
    rewrite(target, without_level_up())
    with caplog.at_level(logging.ERROR):
        source = CatalogSource(target, home=home)
    assert "level_up" in source.get()
    assert "level_up: the type was removed" in caplog.text


def test_a_stage_starting_after_running_stages_refused_a_file_refuses_it_too(target, home, caplog):
    running = CatalogSource(target, interval_s=0, home=home)
    rewrite(target, with_enchantment())
    accepted = running.get()
    assert accepted.types["purchase_sword"].version == 2
    rewrite(target, without_level_up())
    assert running.get() is accepted  # refused while running ...
    started = CatalogSource(target, home=home)
    assert started.get() == accepted  # ... and by a stage started afterwards, not adopted silently


def test_a_first_start_on_a_malformed_file_fails_with_a_clear_message(target, home):
    rewrite(target, MALFORMED)
    with pytest.raises(CatalogError, match=r"not valid JSON.*no catalog was accepted before in"):
        CatalogSource(target, home=home)


def test_a_first_start_on_a_compatible_file_after_a_refusal_adopts_it(target, home):
    CatalogSource(target, home=home)
    rewrite(target, MALFORMED)
    CatalogSource(target, home=home)
    rewrite(target, with_enchantment())  # fixed by a deploy
    source = CatalogSource(target, home=home)
    assert source.get().types["purchase_sword"].version == 2
    assert load_catalog(last_good_path(home)).types["purchase_sword"].version == 2


def test_a_malformed_memory_is_ignored(target, home, caplog):
    last_good_path(home).parent.mkdir(parents=True)
    last_good_path(home).write_text(MALFORMED)
    with caplog.at_level(logging.WARNING):
        source = CatalogSource(target, home=home)
    assert source.get() == load_catalog(target)
    assert "ignoring the remembered catalog" in caplog.text
    assert load_catalog(last_good_path(home)) == load_catalog(target)  # and replaced


def test_a_stage_runs_on_when_it_cannot_write_its_memory(target, tmp_path, caplog):
    home = tmp_path / "not-a-directory"
    home.write_text("")
    with caplog.at_level(logging.WARNING):
        source = CatalogSource(target, home=home)
    assert source.get() == load_catalog(target)
    assert "could not remember the accepted catalog" in caplog.text


# While running ------------------------------------------------------------------------------------


def test_a_running_stage_keeps_the_last_good_one_through_a_malformed_file(target, home, caplog):
    source = CatalogSource(target, interval_s=0, home=home)
    current = source.get()
    rewrite(target, MALFORMED)
    with caplog.at_level(logging.ERROR):
        assert source.get() is current
    assert "catalog change refused, keeping the current one" in caplog.text and "not valid JSON" in caplog.text
    rewrite(target, with_enchantment())
    assert source.get().types["purchase_sword"].version == 2
    assert load_catalog(last_good_path(home)).types["purchase_sword"].version == 2


def test_an_accepted_catalog_is_remembered_as_deployed_json(target, home):
    source = CatalogSource(target, home=home)
    assert last_good_path(home).read_text() == catalog_to_json(source.get())


def test_the_memory_never_goes_back_to_an_older_catalog(target, home):
    late = CatalogSource(target, interval_s=0, home=home)  # a stage that looks at the file late
    doc = json.loads(with_enchantment())
    sword = next(t for t in doc["types"] if t["event_type"] == "purchase_sword")
    sword["version"] += 1
    sword["fields"].append({"name": "rune", "type": "string", "required": False, "description": ""})
    rewrite(target, json.dumps(doc))
    CatalogSource(target, home=home)  # another stage accepts v3
    assert load_catalog(last_good_path(home)).types["purchase_sword"].version == 3

    rewrite(target, with_enchantment())  # v2 (rolled back by hand): compatible with the late stage's v1
    assert late.get().types["purchase_sword"].version == 2
    assert load_catalog(last_good_path(home)).types["purchase_sword"].version == 3  # not v2
