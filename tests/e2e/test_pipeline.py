"""HTTP in, exact per-type counts out in Trino, as the seed's users would do it with `ab`."""

import shutil
import subprocess
import uuid

import pytest
import requests

from tests.helpers import count_when, query, wait_for

pytestmark = pytest.mark.e2e


def ab(n: int, host: str, url: str) -> None:
    result = subprocess.run(
        [shutil.which("ab") or "ab", "-n", str(n), "-H", f"Host: {host}", url],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stderr
    assert f"Complete requests:      {n}" in result.stdout and "Failed requests:        0" in result.stdout


def test_seed_traffic_lands_per_type_with_exact_counts_and_a_bad_event_is_a_dead_letter(live_settings):
    host = f"user1.{uuid.uuid4().hex[:8]}.comcast.com"  # this run's rows only
    c = live_settings.collector_url
    ab(150, host, f"{c}/purchase_a_sword")
    ab(10, host, f"{c}/join_guild")
    bad_id = f"bad-{uuid.uuid4()}"
    response = requests.post(
        f"{c}/events",
        headers={"Host": host},
        timeout=10,
        json=[
            {"event_type": "default"},
            {"event_type": "purchase_sword", "event_id": bad_id, "price": "a lot"},
        ],
    )
    assert response.status_code == 202, response.text

    assert count_when(live_settings, f"SELECT count(*) FROM sword_purchases WHERE host = '{host}'", 150) == 150
    assert count_when(live_settings, f"SELECT count(*) FROM guild_joins WHERE host = '{host}'", 10) == 10
    assert count_when(live_settings, f"SELECT count(*) FROM default_hits WHERE host = '{host}'", 1) == 1

    letters = wait_for(
        lambda: query(
            live_settings, f"SELECT reason, source_topic, event_type FROM dead_letters WHERE event_id = '{bad_id}'"
        ),
        what="the dead letter",
    )
    assert letters == [["field 'price': expected double, got string 'a lot'", "events", "purchase_sword"]]
    # The bad event is nowhere else (count_when let the pipeline settle, so the counts are final).
    assert query(live_settings, f"SELECT count(*) FROM sword_purchases WHERE event_id = '{bad_id}'") == [[0]]


def test_a_restart_keeps_data_and_tables_and_frees_every_port(pipeline):
    settings = pipeline.settings
    host = f"restart.{uuid.uuid4().hex[:8]}"
    ab(5, host, f"{settings.collector_url}/purchase_a_sword")
    sql = f"SELECT count(*) FROM sword_purchases WHERE host = '{host}'"
    assert count_when(settings, sql, 5) == 5

    pipeline.down()
    pipeline.up()  # refuses to start if any port were still taken

    assert query(settings, sql) == [[5]]  # same table, same rows, no DDL by anyone
    ab(5, host, f"{settings.collector_url}/purchase_a_sword")
    assert count_when(settings, sql, 10) == 10
