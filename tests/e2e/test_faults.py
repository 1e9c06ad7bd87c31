"""The fault suite at CI's size: every service of the test pipeline is killed or paused in turn
while a retrying client sends; the event ids in Trino are exactly the accepted ones."""

import threading

import pytest

from ops.faults import FAULTS, fault_name, run_suite, table

pytestmark = pytest.mark.e2e


def test_no_event_is_lost_or_doubled_whatever_dies(pipeline):
    stopping = threading.Event()
    watcher = threading.Thread(target=pipeline.watch, args=(stopping.is_set,), kwargs={"interval_s": 0.5}, daemon=True)
    watcher.start()
    try:
        # CI's size: 20 events/s, and each pause 10 s (`make faults` pauses for 20 s)
        rows, client = run_suite(pipeline, rate=20.0, settle_s=3.0, pause_s=10.0)
    finally:
        stopping.set()
        watcher.join(10)
    print("\n" + table(rows, client))
    assert [r.fault for r in rows] == [fault_name(what, how, 10.0) for what, _, how in FAULTS] + ["all"]
    assert all(r.recover_s is not None for r in rows[:-1]), "a fault the pipeline did not recover from"
    total = rows[-1]
    assert total.accepted >= 500 and total.accepted == len(client.accepted)
    assert (total.rows, total.lost, total.duplicates) == (total.accepted, 0, 0)
    assert all((r.lost, r.duplicates) == (0, 0) for r in rows)
    assert client.stray == 0  # nothing landed that the client was not told was accepted
    assert set(client.refusals) <= {"503", "connection error"}  # refusals it saw and retried; no 4xx or 500
