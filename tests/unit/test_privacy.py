"""Players' data without services: keyed hashes, personal fields in the router's decisions, forget
requests on disk, the suppression list, the erasure's SQL, retention's cut-off and the catalog's
`pii` and `retention_days`."""

from __future__ import annotations

import json
import os
import stat
from datetime import UTC, datetime

import pytest

from compactor.compact import retention_cutoff, retention_days
from compactor.erasure import chunks, player_predicate
from faust_app.routing import Source, route, route_record
from questlog.catalog import DEAD_LETTER_TABLE, CatalogError, parse_schema
from questlog.catalog.evolution import check_evolution
from questlog.catalog.files import build_catalog
from questlog.privacy import (
    DONE,
    LIFTED,
    PENDING,
    Hasher,
    RequestStore,
    Suppressions,
    load_secret,
    pseudonymise,
    truncate_ip,
)

SRC = Source("events", 0, 7)
NOW = datetime(2026, 12, 7, 12, 0, tzinfo=UTC)
KEY = bytes(range(32))


@pytest.fixture
def settings(settings, tmp_path):
    """Settings with a home of the test's own: requests and the secret do not leak between tests."""
    return settings.replace(home=str(tmp_path))


def join(**fields) -> dict:
    return {
        "event_id": "e-1",
        "source": "default",
        "event_type": "join_guild",
        "received_at": "2026-12-07T10:00:00.000+00:00",
        "user_id": "alice",
        "guild_id": "g1",
        **fields,
    }


def test_the_secret_is_made_once_private_and_kept(settings):
    first = load_secret(settings)
    path = settings.home_path / "privacy" / "secret"
    assert len(first) == 32 and stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert load_secret(settings) == first
    assert KEY.hex() not in repr(Hasher(KEY)) and "secret" in repr(Hasher(KEY))


def test_hashes_are_keyed_stable_and_joinable():
    h, other = Hasher(KEY), Hasher(bytes(32))
    assert h.value("bob") == h.value("bob") != h.value("bobby")
    assert h.value("bob").startswith("hmac:") and len(h.value("bob")) == 5 + 32
    assert h.value("bob") != other.value("bob")  # without the key, no guess can be checked
    assert h.player("bob") != h.value("bob")[5:]  # separate uses, separate hashes


@pytest.mark.parametrize(
    "address, cut",
    [
        ("203.0.113.77", "203.0.113.0"),
        (" 10.1.2.3 ", "10.1.2.0"),
        ("2001:db8:abcd:12:1:2:3:4", "2001:db8:abcd::"),
        ("not an address", None),
        (42, None),
    ],
)
def test_addresses_are_cut_to_their_network(address, cut):
    assert truncate_ip(address) == cut


def test_pseudonymise_hashes_drops_and_cuts_in_place():
    h = Hasher(KEY)
    event = {"a": "bob", "b": "secret", "ip": "198.51.100.9", "other": "kept", "none": None}
    assert pseudonymise(event, [("a", "hash"), ("b", "drop"), ("ip", "ip"), ("none", "hash"), ("missing", "hash")], h)
    assert event == {"a": h.value("bob"), "ip": "198.51.100.0", "other": "kept", "none": None}
    again = dict(event)
    assert not pseudonymise(again, [("a", "hash"), ("ip", "ip")], h)  # a replayed dead letter: hashed once
    assert again == event


def test_the_router_writes_personal_fields_hashed_or_cut_never_raw(catalog):
    h = Hasher(KEY)
    raw = json.dumps(join(invited_by="carol", client_ip="192.0.2.200")).encode()
    out = route(raw, SRC, catalog, "events", "events.dlq", NOW, hasher=h)
    assert out.topic == "events.join_guild"
    written = json.loads(out.value)
    assert written["invited_by"] == h.value("carol") and written["client_ip"] == "192.0.2.0"
    assert b"carol" not in out.value and b"192.0.2.200" not in out.value
    # a dead letter of the type (here: an unknown field) carries the rewritten event, not the raw one
    bad = json.dumps(join(invited_by="carol", client_ip="192.0.2.200", nope=1)).encode()
    dead = route(bad, SRC, catalog, "events", "events.dlq", NOW, hasher=h)
    assert dead.dead and b"carol" not in dead.value and b"192.0.2.200" not in dead.value
    assert json.loads(json.loads(dead.value)["raw"])["invited_by"] == h.value("carol")
    # one without personal values keeps its payload byte for byte, as every other dead letter does
    plain = json.dumps(join(nope=1)).encode()
    dead = route(plain, SRC, catalog, "events", "events.dlq", NOW, hasher=h)
    assert dead.dead and json.loads(dead.value)["raw"] == plain.decode()


def test_a_forgotten_players_events_go_nowhere_valid_or_not_alone_or_in_an_array(catalog):
    forgotten = {"alice"}

    def drop(event):
        return isinstance(event, dict) and event.get("user_id") in forgotten

    args = (catalog, "events", "events.dlq", NOW)
    assert route(json.dumps(join()).encode(), SRC, *args, drop=drop).suppressed
    assert route(json.dumps(join(nope=1)).encode(), SRC, *args, drop=drop).suppressed  # would be a dead letter
    batch = json.dumps([join(), join(event_id="e-2", user_id="bob"), join(event_id="e-3", nope=1)]).encode()
    outs = [out for _, out in route_record(batch, SRC, *args, drop=drop)]
    assert [o.suppressed for o in outs] == [True, False, True]
    assert json.loads(outs[1].value)["user_id"] == "bob"


def test_a_request_is_on_disk_before_it_is_acknowledged_and_asking_twice_is_one(settings):
    store = RequestStore(settings)
    request, new = store.record("dave", None, now=1000.0)
    assert new and request.state == PENDING
    on_disk = json.loads(store.path(request.id).read_text())
    assert on_disk["user_id"] == "dave" and on_disk["state"] == PENDING
    assert stat.S_IMODE(os.stat(store.path(request.id)).st_mode) == 0o600
    again, new = store.record("dave", None)
    assert not new and again.id == request.id and len(store.all()) == 1
    assert store.record("dave", "mobile")[0].id != request.id  # one source is another request
    audit = store.audit_path.read_text()
    assert "dave" not in audit and request.user_hash not in audit and request.id in audit


def test_an_erased_request_keeps_only_the_hash_and_still_suppresses(settings):
    store = RequestStore(settings)
    sup = Suppressions(settings)
    request, _ = store.record("erin", None)
    assert sup.refresh() and sup.matches({"user_id": "erin", "source": "any"})
    request.state, request.user_id = DONE, None
    store.save(request)
    text = store.path(request.id).read_text()
    assert "erin" not in text and request.user_hash in text
    sup.refresh()
    assert sup.matches({"user_id": "erin"}) and not sup.matches({"user_id": "erin2"})
    assert not sup.refresh()  # nothing changed: no reload
    assert store.lift("erin").state == LIFTED
    assert sup.refresh() and not sup.matches({"user_id": "erin"})  # lifting is explicit, and it is all it takes


def test_a_request_for_one_source_suppresses_that_source_only(settings):
    store = RequestStore(settings)
    store.record("frank", "mobile")
    sup = Suppressions(settings)
    assert sup.matches({"user_id": "frank", "source": "mobile"})
    assert not sup.matches({"user_id": "frank", "source": "web"})
    assert not sup.matches({"user_id": "frank"})  # source "default"


@pytest.mark.parametrize("user", ["", "x" * 1025, "a\nb"])
def test_hostile_player_ids_are_refused(settings, user):
    with pytest.raises(ValueError):
        RequestStore(settings).record(user)


def test_a_thousand_requests_suppress_in_one_set_lookup_each(settings):
    store = RequestStore(settings)
    for i in range(1000):
        store.record(f"p{i}", None)
    sup = Suppressions(settings)
    assert len(sup) == 1000
    assert sup.matches({"user_id": "p999"}) and not sup.matches({"user_id": "p1000"})


def test_the_erasure_predicates_quote_what_they_name(catalog, settings):
    store = RequestStore(settings)
    quoted, _ = store.record("o'brien", None)
    scoped, _ = store.record("gina", "mob'ile")
    tables = {t.name: t for t in catalog.tables()}
    where = player_predicate(tables["guild_joins"], [quoted, scoped])
    assert where == "\"user_id\" IN ('o''brien') OR (\"source\" = 'mob''ile' AND \"user_id\" = 'gina')"
    dead = player_predicate(tables[DEAD_LETTER_TABLE], [quoted])
    assert "strpos(raw, '\"user_id\":\"o''brien\"')" in dead and "json_extract_scalar(raw, '$.user_id')" in dead
    # parsed only below the length at which Trino's JSON parser may fail the statement (a field name
    # over 50,000 characters: GENERIC_INTERNAL_ERROR, which try() does not catch)
    assert "CASE WHEN length(raw) < 50000 THEN try(json_extract_scalar(raw, '$.user_id')) END = 'o''brien'" in dead
    many = [store.record(f"{i:0500d}", None)[0] for i in range(1000)]
    groups = list(chunks(many))
    assert len(groups) > 1 and sum(map(len, groups)) == 1000
    assert all(len(player_predicate(tables["guild_joins"], g)) < 250_000 for g in groups)


def test_retention_keeps_exactly_the_last_days(settings, catalog):
    assert retention_cutoff("2026-12-07", 7) == "2026-11-30"
    assert retention_cutoff("2026-03-01", 1) == "2026-02-28"
    days = retention_days(settings, catalog)
    assert days["guild_leaves"] == 365 and days[DEAD_LETTER_TABLE] == 30
    assert "sessions" not in days and "sword_purchases" not in days


def test_the_catalog_takes_pii_and_retention_and_refuses_nonsense():
    doc = {
        "event_type": "t",
        "table": "ts",
        "retention_days": 90,
        "fields": {"mail": {"type": "string", "pii": "hash"}, "ip": {"type": "string", "pii": "ip"}},
    }
    et = parse_schema("t.toml", doc)
    assert et.retention_days == 90 and et.pii_rules == (("mail", "hash"), ("ip", "ip"))
    for bad in (
        {**doc, "retention_days": 0},
        {**doc, "fields": {"mail": {"type": "string", "pii": "encrypt"}}},
        {**doc, "fields": {"n": {"type": "long", "pii": "hash"}}},
    ):
        with pytest.raises(CatalogError):
            parse_schema("t.toml", bad)
    plain = parse_schema(
        "t.toml", {**doc, "fields": {"mail": {"type": "string"}, "ip": {"type": "string", "pii": "ip"}}}
    )
    problems = check_evolution(build_catalog([et]), build_catalog([plain]))
    assert problems and "was personal" in problems[0]


def test_status_shows_each_open_request_until_done_without_the_player(settings):
    from rich.console import Console

    import ops.status as st

    store = RequestStore(settings)
    pending, _ = store.record("hank", None)
    erased, _ = store.record("ivy", "mobile")
    erased.state, erased.user_id, erased.erased_at = "erased", None, erased.requested_at
    store.save(erased)
    done, _ = store.record("jo", None)
    done.state, done.user_id = DONE, None
    store.save(done)
    rows = st._forget_requests(settings)
    assert [(r["id"], r["state"]) for r in rows] == [(pending.id, PENDING), (erased.id, "erased")]
    status = st.Status(True, 0.1, [], None, {}, [], {}, forget_requests=rows)
    console = Console(record=True, width=160)
    console.print(st.table(status))
    text = console.export_text()
    assert f"forget {pending.id[:12]}" in text and "rows still in the tables" in text
    assert f"forget {erased.id[:12]}" in text and "files leave HDFS in" in text
    assert done.id[:12] not in text
    assert "hank" not in text and "ivy" not in json.dumps(status.to_json())
