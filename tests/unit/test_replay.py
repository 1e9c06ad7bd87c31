import json

from questlog.replay import plan_replay


def letter(**fields):
    event = {"event_id": "e-1", "event_type": "level_up", "received_at": "2026-11-29T10:00:00.000+00:00",
             "level": 3, **fields}
    return json.dumps(event)


def test_only_what_the_catalog_now_accepts_is_replayed_once_per_event_id(catalog):
    plan = plan_replay([
        letter(),                        # valid now (e.g. after a fix)
        letter(),                        # the same event twice in dead_letters: sent once
        letter(event_id="e-2", level="three"),
        "not json",
        json.dumps({"event_type": "level_up", "level": 1}),  # no event_id
    ], catalog)
    assert list(plan.send) == ["e-1"]
    assert plan.send["e-1"] == ("level_up", letter().encode())
    assert dict(plan.still_invalid) == {"field 'level': expected long, got string 'three'": 1}
    assert plan.not_replayable == 2
