"""Issue 10 part 5 on the running pipeline: the stages remember the catalog they accepted, keep
working through a malformed deployed file, and a stage started meanwhile runs on what they
accepted instead of crashing on the file."""

import os
import stat
import time
import uuid
from pathlib import Path

import pytest
import requests

from questlog.catalog import load_catalog
from questlog.catalog.watch import CatalogSource, last_good_path
from tests.helpers import count_when, wait_for

pytestmark = pytest.mark.e2e

MALFORMED = '{"format": 1, "types": [ {"event_type": "level_up", '


def test_stages_remember_their_catalog_and_keep_working_through_a_malformed_file(live_settings):
    deployed = Path(live_settings.catalog)
    memory = last_good_path(live_settings.home)
    wait_for(
        lambda: memory.exists() and load_catalog(memory) == load_catalog(deployed),
        timeout_s=30,
        what="the stages to remember the deployed catalog",
    )
    assert stat.S_IMODE(os.stat(memory).st_mode) == 0o644
    remembered = load_catalog(memory)

    original = deployed.read_text()
    logs = {name: live_settings.home_path / "logs" / f"{name}.log" for name in ("router", "sink")}
    refusals = {name: log.read_text(errors="replace").count("not valid JSON") for name, log in logs.items()}
    try:
        deployed.write_text(MALFORMED)  # by hand, cut off mid-write
        time.sleep(3)  # the stages look at the file every 2 s

        # Still accepting, routing and landing.
        event_id = f"safety-{uuid.uuid4()}"
        response = requests.post(
            f"{live_settings.collector_url}/events",
            timeout=10,
            json={"event_type": "level_up", "event_id": event_id, "level": 3},
        )
        assert response.status_code == 202, response.text
        assert count_when(live_settings, f"SELECT count(*) FROM level_ups WHERE event_id = '{event_id}'", 1) == 1
        for name, log in logs.items():  # ... and saying why they refused the file
            text = log.read_text(errors="replace")
            assert text.count("not valid JSON") > refusals[name], f"{name} did not log the refusal"
            assert "catalog change refused, keeping the current one" in text

        # A stage starting now (a restart) runs on what the running stages accepted.
        started = CatalogSource(deployed, home=live_settings.home)
        assert started.get() == remembered
        assert load_catalog(memory) == remembered  # the memory is not overwritten by the bad file
    finally:
        time.sleep(0.01)
        deployed.write_text(original)
