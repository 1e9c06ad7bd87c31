"""The data scientist's first notebook (notebooks/first_day.ipynb) runs top to bottom against the
test stack, after a load of game-like traffic, and draws its plots from real rows."""

from __future__ import annotations

import pytest

from ops.load import run_load
from questlog.catalog import load_catalog
from questlog.settings import REPO_ROOT
from tests.helpers import query, wait_for

pytestmark = pytest.mark.e2e

NOTEBOOK = REPO_ROOT / "notebooks" / "first_day.ipynb"


def test_the_first_day_notebook_runs_top_to_bottom_and_plots(pipeline, monkeypatch):
    import nbformat
    from nbclient import NotebookClient

    s = pipeline.settings
    result = run_load(s.collector_url, load_catalog(s.catalog), players=30, rate=0, count=1500, seed=5)
    assert sum(result.accepted.values()) == result.total_sent
    swords = result.accepted["purchase_sword"]
    assert swords > 0
    # this load's rows (other tests' rows may be there too): every sword purchase, and sessions of
    # its players (p00000...: the load's names) that started during its game time
    wait_for(
        lambda: query(s, f"SELECT count(*) FROM sword_purchases WHERE event_id LIKE '{result.run}-%'")[0][0] == swords,
        240,
        3,
        what=f"the load's {swords} sword purchases",
    )
    wait_for(
        lambda: query(s, "SELECT count(*) FROM sessions WHERE regexp_like(user_id, '^p[0-9]{5}$')")[0][0] >= 20,
        240,
        3,
        what="sessions of the load's players",
    )

    for name, value in s.to_env().items():  # the kernel finds Trino as every Questlog tool does
        monkeypatch.setenv(name, value)
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=300, kernel_name="python3", resources={"metadata": {"path": str(REPO_ROOT)}}).execute()
    # (a failing cell raises CellExecutionError above)
    nbformat.write(nb, str(s.home_path / "first_day.executed.ipynb"))  # to look at its plots

    code = [c for c in nb.cells if c.cell_type == "code"]
    plots = [c for c in code if any("image/png" in o.get("data", {}) for o in c.outputs)]
    assert len(plots) == len(code) - 1  # every cell but the connection draws
    text = "".join(o.get("text", "") for c in code for o in c.outputs)
    assert "no sessions yet" not in str([o.get("data") for c in code for o in c.outputs])
    assert "sessions; median length" in text and "players," in text, text
