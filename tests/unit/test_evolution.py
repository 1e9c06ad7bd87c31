"""Catalog changes: what deploys, what is refused and why, and how running stages reload."""

import json
import shutil
import time
from pathlib import Path

import pytest

from questlog.catalog import (
    DEPLOYED_CATALOG,
    SCHEMA_DIR,
    CatalogError,
    catalog_from_json,
    catalog_to_json,
    load_catalog,
    load_schemas,
)
from questlog.catalog.docs import render_markdown
from questlog.catalog.evolution import IncompatibleChange, check_evolution, deploy
from questlog.catalog.watch import CatalogSource
from questlog.settings import REPO_ROOT

FIELD = '\n[fields.{name}]\ntype = "{type}"\n{extra}'


@pytest.fixture
def schemas(tmp_path):
    target = tmp_path / "schemas"
    shutil.copytree(SCHEMA_DIR, target)
    return target


def edit(schemas: Path, name: str, old: str, new: str) -> None:
    path = schemas / f"{name}.toml"
    text = path.read_text()
    assert old in text
    path.write_text(text.replace(old, new, 1))


def add_field(schemas: Path, name: str, field: str, type_: str = "string", extra: str = "") -> None:
    path = schemas / f"{name}.toml"
    path.write_text(path.read_text() + FIELD.format(name=field, type=type_, extra=extra))


def test_the_committed_catalog_is_the_deployed_schemas():
    assert DEPLOYED_CATALOG.read_text() == catalog_to_json(load_schemas(SCHEMA_DIR)), (
        "questlog/catalog/schemas/ changed without a deploy: run `questlog catalog deploy`"
    )


def test_the_readme_lists_the_tables_of_the_catalog():
    from questlog.catalog.docs import render_tables

    readme = (REPO_ROOT / "README.md").read_text()
    assert render_tables(load_catalog()) in readme, (
        "README.md's list of tables is stale: run `questlog catalog docs -o docs/events.md --readme README.md`"
    )


def test_the_event_reference_is_generated_from_the_catalog():
    assert (REPO_ROOT / "docs" / "events.md").read_text() == render_markdown(load_catalog()), (
        "docs/events.md is stale: run `questlog catalog docs -o docs/events.md`"
    )


def test_a_new_optional_field_with_a_version_bump_deploys(schemas, tmp_path):
    target = tmp_path / "catalog.json"
    shutil.copy(DEPLOYED_CATALOG, target)
    add_field(schemas, "purchase_sword", "enchantment")
    edit(schemas, "purchase_sword", "version = 1", "version = 2")
    catalog, changes = deploy(schemas, target)
    assert changes == ["purchase_sword v1 -> v2: new fields enchantment"]
    assert load_catalog(target).types["purchase_sword"].field("enchantment").type == "string"
    assert catalog.types["purchase_sword"].version == 2


def test_a_new_type_deploys(schemas, tmp_path):
    target = tmp_path / "catalog.json"
    shutil.copy(DEPLOYED_CATALOG, target)
    (schemas / "open_chest.toml").write_text('event_type = "open_chest"\ntable = "chest_openings"\n')
    _, changes = deploy(schemas, target)
    assert changes == ["new type open_chest (table chest_openings)"]


@pytest.mark.parametrize("name", ["café", "open-chest", "OpenChest", "o" * 64])
def test_deploy_refuses_a_type_name_kafka_hdfs_or_trino_cannot_take(schemas, tmp_path, name):
    target = tmp_path / "catalog.json"
    shutil.copy(DEPLOYED_CATALOG, target)
    before = target.read_text()
    (schemas / "open_chest.toml").write_text(f'event_type = "{name}"\ntable = "chest_openings"\n')
    with pytest.raises(CatalogError, match=r"open_chest.toml: event_type must be \[a-z\]\[a-z0-9_\]\* and at most 63"):
        deploy(schemas, target)
    assert target.read_text() == before


@pytest.mark.parametrize(
    "change, problem",
    [
        (lambda s: (s / "level_up.toml").unlink(), "level_up: the type was removed"),
        (
            lambda s: (s / "join_guild.toml").write_text((s / "join_guild.toml").read_text().split("[fields.role]")[0]),
            "join_guild: field 'role' was removed",
        ),
        (
            lambda s: edit(s, "purchase_sword", 'quantity]\ntype = "long"', 'quantity]\ntype = "double"'),
            "purchase_sword: field 'quantity' changed type from long to double",
        ),
        (
            lambda s: edit(
                s, "join_guild", 'guild_id]\ntype = "string"', 'guild_id]\ntype = "string"\nrequired = true'
            ),
            "join_guild: field 'guild_id' became required",
        ),
        (
            lambda s: (
                add_field(s, "level_up", "zone", extra="required = true\n"),
                edit(s, "level_up", "version = 1", "version = 2"),
            ),
            "level_up: new field 'zone' is required",
        ),
        (
            lambda s: add_field(s, "level_up", "zone"),
            "level_up: fields were added but the version is still 1; set version = 2",
        ),
        (
            lambda s: edit(s, "join_guild", 'table = "guild_joins"', 'table = "guild_members"'),
            "join_guild: table renamed from 'guild_joins' to 'guild_members'",
        ),
    ],
)
def test_incompatible_changes_are_refused_and_nothing_is_deployed(schemas, tmp_path, change, problem):
    target = tmp_path / "catalog.json"
    shutil.copy(DEPLOYED_CATALOG, target)
    before = target.read_text()
    change(schemas)
    with pytest.raises(IncompatibleChange) as info:
        deploy(schemas, target)
    assert any(p.startswith(problem) for p in info.value.problems), info.value.problems
    assert str(info.value).startswith("incompatible catalog change, nothing deployed:")
    assert target.read_text() == before


def test_a_version_may_not_go_down():
    old = load_catalog()
    doc = json.loads(catalog_to_json(old))
    doc["types"][0]["version"] = 2
    newer = catalog_from_json(json.dumps(doc))
    assert check_evolution(old, newer) == []
    assert check_evolution(newer, old) == [f"{doc['types'][0]['event_type']}: version went down from 2 to 1"]


def test_a_running_stage_reloads_a_deployed_change_and_refuses_a_bad_one(schemas, tmp_path, caplog):
    target = tmp_path / "catalog.json"
    shutil.copy(DEPLOYED_CATALOG, target)
    source = CatalogSource(target, interval_s=0, home=tmp_path / "home")
    assert source.get().types["purchase_sword"].field("enchantment") is None

    add_field(schemas, "purchase_sword", "enchantment")
    edit(schemas, "purchase_sword", "version = 1", "version = 2")
    deploy(schemas, target)
    assert source.get().types["purchase_sword"].field("enchantment") is not None

    # Written by hand, bypassing deploy: the stage keeps what it has and says why.
    doc = json.loads(target.read_text())
    doc["types"] = [t for t in doc["types"] if t["event_type"] != "level_up"]
    time.sleep(0.01)
    target.write_text(json.dumps(doc))
    assert "level_up" in source.get()
    assert "catalog change refused" in caplog.text and "level_up: the type was removed" in caplog.text
