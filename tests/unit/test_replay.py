import json

from ops.replay import plan_replay


def letter(**fields):
    event = {
        "event_id": "e-1",
        "event_type": "level_up",
        "received_at": "2026-11-29T10:00:00.000+00:00",
        "level": 3,
        **fields,
    }
    return json.dumps(event)


def test_only_what_the_catalog_now_accepts_is_replayed_once_per_event_id(catalog):
    plan = plan_replay(
        [
            letter(),  # valid now (e.g. after a fix)
            letter(),  # the same event twice in dead_letters: sent once
            letter(event_id="e-2", level="three"),
            "not json",
            json.dumps({"event_type": "level_up", "level": 1}),  # no event_id
            "[" * 100_000,  # the router's dead letter of JSON nested deeper than a parser recurses
        ],
        catalog,
    )
    assert list(plan.send) == [(None, "e-1")]  # from before sources existed
    assert plan.send[(None, "e-1")] == ("level_up", letter().encode())
    assert dict(plan.still_invalid) == {"field 'level': expected long, got string 'three'": 1}
    assert plan.not_replayable == 3


def test_two_sources_with_the_same_event_id_are_two_replays(catalog):
    plan = plan_replay([letter(source="game-a"), letter(source="game-b"), letter(source="game-a")], catalog)
    assert sorted(plan.send) == [("game-a", "e-1"), ("game-b", "e-1")]


class FakeCursor:
    def __init__(self, rows):
        self.rows = rows

    def execute(self, sql, params):
        self.sql, self.params = sql, params

    def fetchall(self):
        return [r for r in self.rows if r[1] in self.params]


def test_what_has_landed_is_matched_on_source_and_event_id(catalog):
    from ops.replay import _landed

    plan = plan_replay([letter(source="game-a"), letter(source="game-b"), letter(event_id="e-9")], catalog)
    cursor = FakeCursor([("game-a", "e-1"), (None, "e-9"), ("game-c", "e-1")])
    assert _landed(cursor, catalog, plan) == {("game-a", "e-1"), (None, "e-9")}
    assert cursor.sql.startswith('SELECT source, event_id FROM "level_ups"')
