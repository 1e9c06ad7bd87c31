"""Changing the catalog safely: what may change, and deploying a change.

Compatible: a new event type; a new optional field (with the type's version bumped); new
descriptions, routes or response texts. Everything else would lose data or break producers or
old rows, and is refused before anything is deployed: removing a type or a field, renaming a
table, changing a field's type, making a field required, adding a required field, lowering a
version. `questlog catalog deploy` runs these checks; the running stages check them again when
they reload the deployed catalog.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from questlog.catalog import Catalog, CatalogError, catalog_to_json, load_catalog, load_schemas


class IncompatibleChange(ValueError):
    def __init__(self, problems: list[str]) -> None:
        super().__init__("incompatible catalog change, nothing deployed:\n" + "\n".join(f"  - {p}" for p in problems))
        self.problems = problems


def check_evolution(old: Catalog, new: Catalog) -> list[str]:
    """Every reason why ``new`` cannot replace ``old``; empty if it can."""
    problems = []
    for before in old:
        after = new.get(before.name)
        if after is None:
            problems.append(
                f"{before.name}: the type was removed; its table {before.table!r} holds data and "
                "producers may still send it"
            )
            continue
        if after.table != before.table:
            problems.append(f"{before.name}: table renamed from {before.table!r} to {after.table!r}")
        if after.version < before.version:
            problems.append(f"{before.name}: version went down from {before.version} to {after.version}")
        old_fields = {f.name: f for f in before.fields}
        new_fields = {f.name: f for f in after.fields}
        for name, f in old_fields.items():
            g = new_fields.get(name)
            if g is None:
                problems.append(
                    f"{before.name}: field {name!r} was removed; old rows and producers use it "
                    "(leave it, and add a new optional field if its meaning changed)"
                )
            elif g.type != f.type:
                problems.append(
                    f"{before.name}: field {name!r} changed type from {f.type} to {g.type}; add a new field instead"
                )
            elif f.pii and g.pii != f.pii:
                problems.append(
                    f"{before.name}: field {name!r} was personal (pii = {f.pii!r}) and would be stored "
                    f"{'as sent' if not g.pii else f'as pii = {g.pii!r}'}; add a new field instead"
                )
            elif g.required and not f.required:
                problems.append(f"{before.name}: field {name!r} became required; events without it would be rejected")
        added = [g for name, g in new_fields.items() if name not in old_fields]
        for g in added:
            if g.required:
                problems.append(
                    f"{before.name}: new field {g.name!r} is required; a new field must be "
                    "optional (old events do not have it)"
                )
        if added and after.version == before.version:
            problems.append(
                f"{before.name}: fields were added but the version is still {before.version}; "
                f"set version = {before.version + 1}"
            )
    return problems


def write_atomically(path: Path, text: str) -> None:
    """Replace ``path`` by a file holding ``text``, readable by all (0644: the stages may run as other
    users, e.g. the compose containers' uid 10001 on a read-only mount of the directory)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, 0o644)  # mkstemp makes it 0600
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def deploy(
    schemas: str | Path, target: str | Path, dry_run: bool = False, home: str | Path | None = None
) -> tuple[Catalog, list[str]]:
    """Compile the TOML schemas in ``schemas`` and, if compatible with the catalog deployed at
    ``target`` (if any) and with the last one the stages of QUESTLOG_HOME ``home`` accepted (if
    given; see questlog.catalog.watch), write them there. A deployed file the stages refused as
    malformed is replaced. Returns the new catalog and a summary of changes."""
    from questlog.catalog.watch import load_last_good

    new = load_schemas(schemas)
    target = Path(target)
    last = load_last_good(home) if home is not None else None
    try:
        old = load_catalog(target) if target.exists() else None
    except CatalogError:
        if last is None:
            raise
        old = None  # malformed: the running stages use the last good one, which the change is checked against
    problems = check_evolution(old, new) if old is not None else []
    if last is not None:
        problems += [p for p in check_evolution(last, new) if p not in problems]
    if problems:
        raise IncompatibleChange(problems)
    changes = summarize(old if old is not None else last, new)
    text = catalog_to_json(new)
    if not dry_run and _read(target) != text:
        write_atomically(target, text)
    return new, changes


def _read(path: Path) -> str | None:
    try:
        return path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError):
        return None


def summarize(old: Catalog | None, new: Catalog) -> list[str]:
    if old is None:
        return [f"new catalog with {len(new.types)} types: {', '.join(new.names)}"]
    changes = []
    for et in new:
        before = old.get(et.name)
        if before is None:
            changes.append(f"new type {et.name} (table {et.table})")
            continue
        added = [f.name for f in et.fields if before.field(f.name) is None]
        if added:
            changes.append(f"{et.name} v{before.version} -> v{et.version}: new fields {', '.join(added)}")
        elif et != before:
            changes.append(f"{et.name}: descriptions, routes or responses changed")
    return changes
