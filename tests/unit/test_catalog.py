import pytest

from questlog.catalog import (
    DEAD_LETTER_TABLE,
    SESSIONS_TABLE,
    CatalogError,
    Field,
    build_catalog,
    coerce_text,
    event_key,
    load_schemas,
    parse_schema,
    valid_event_id,
    validate,
)


def valid(event_type="purchase_sword", **fields):
    return {
        "event_id": "e-1",
        "event_type": event_type,
        "received_at": "2026-11-29T10:00:00.000+00:00",
        "host": "user1.comcast.com",
        **fields,
    }


def test_packaged_catalog_has_the_seed_types_and_their_tables(catalog):
    assert {et.name: et.table for et in catalog} == {
        "default": "default_hits",
        "join_guild": "guild_joins",
        "purchase_sword": "sword_purchases",
        "leave_guild": "guild_leaves",
        "level_up": "level_ups",
    }
    assert catalog.routes["/purchase_a_sword"].name == "purchase_sword"
    assert catalog.routes["/join_a_guild"].name == "join_guild"
    assert catalog.routes["/"].name == "default"


def test_tables_include_dead_letters_with_topics_derived_from_types(catalog):
    tables = {t.name: t for t in catalog.tables("events", "events.dlq")}
    assert tables["sword_purchases"].topic == "events.purchase_sword"
    assert tables["sword_purchases"].key == ("source", "event_id")
    assert [c.name for c in tables["sword_purchases"].columns][:4] == [
        "event_id",
        "source",
        "event_type",
        "received_at",
    ]
    assert tables[DEAD_LETTER_TABLE].topic == "events.dlq"
    assert tables[DEAD_LETTER_TABLE].time_column == "failed_at"


def test_valid_event_has_no_errors(catalog):
    assert validate(valid(sword_type="katana", price=12.5, currency="gold", quantity=2), catalog) == []
    assert validate(valid(price=12), catalog) == []  # an integer is a fine double


@pytest.mark.parametrize(
    "event, expected",
    [
        ([1, 2], "event must be a JSON object, got array"),
        (valid(event_type="fly_dragon"), "unknown event_type 'fly_dragon'"),
        ({**valid(), "event_type": None}, "unknown event_type None"),
        (valid(price="abc"), "field 'price': expected double, got string 'abc'"),
        (valid(quantity=1.5), "field 'quantity': expected long, got number 1.5"),
        (valid(quantity=True), "field 'quantity': expected long, got boolean True"),
        (valid(sword_type=7), "field 'sword_type': expected string, got integer 7"),
        ({k: v for k, v in valid().items() if k != "event_id"}, "field 'event_id': required, missing"),
        (valid(received_at="yesterday"), "field 'received_at': expected ISO-8601 timestamp with time zone"),
        (valid(received_at="2026-11-29T10:00:00"), "field 'received_at': expected ISO-8601 timestamp with time zone"),
        (valid(event_id=""), "field 'event_id': expected 1 to 128 characters"),
        (valid(colour="red"), "field 'colour': not in the 'purchase_sword' schema"),
    ],
)
def test_invalid_events_get_a_reason_naming_field_expectation_and_value(catalog, event, expected):
    errors = validate(event, catalog)
    assert any(e.startswith(expected) for e in errors), errors


def test_every_problem_is_reported_not_just_the_first(catalog):
    errors = validate(valid(price="abc", quantity="x", colour="red"), catalog)
    assert len(errors) == 3


@pytest.mark.parametrize(
    "field_type, text, expected",
    [
        ("long", "3", 3),
        ("long", "3.5", "3.5"),
        ("double", "2.5", 2.5),
        ("double", "x", "x"),
        ("boolean", "TRUE", True),
        ("boolean", "no", "no"),
        ("string", "5", "5"),
    ],
)
def test_query_text_is_coerced_or_left_for_validation_to_report(field_type, text, expected):
    assert coerce_text(Field("f", field_type), text) == expected


def test_null_is_fine_for_optional_fields_only(catalog):
    assert validate(valid(price=None), catalog) == []
    assert validate(valid("level_up", level=None), catalog) == ["field 'level': required, got null"]


@pytest.mark.parametrize(
    "doc, message",
    [
        ({"event_type": "x", "table": "xs", "fields": {"a": {"type": "int"}}}, "has type 'int'"),
        ({"event_type": "x", "table": "xs", "fields": {"event_id": {"type": "string"}}}, "is reserved"),
        ({"event_type": "x", "table": "xs", "fields": {"dt": {"type": "string"}}}, "is reserved"),
        (
            {"event_type": "X-1", "table": "xs"},
            "event_type must be \\[a-z\\]\\[a-z0-9_\\]\\* and at most 63 characters",
        ),
        # isidentifier() took these; Kafka cannot name a topic `events.café`, PostgreSQL cuts at 63 bytes
        ({"event_type": "café", "table": "xs"}, "event_type must be .* got 'café'"),
        ({"event_type": "x", "table": "_xs"}, "table must be .* got '_xs'"),
        ({"event_type": "x" * 64, "table": "xs"}, "event_type must be .* at most 63 characters, got 'x{64}'"),
        ({"event_type": "x", "table": "xs", "fields": {"prix_é": {"type": "string"}}}, "field name 'prix_é' must be"),
        ({"event_type": "x", "table": "xs", "fields": {"Price": {"type": "string"}}}, "field name 'Price' must be"),
        ({"event_type": "x", "table": "dead_letters"}, "table name 'dead_letters' is reserved"),
        ({"event_type": "dlq", "table": "x"}, "event_type 'dlq' is reserved"),
        ({"event_type": "sessions", "table": "x"}, "event_type 'sessions' and table 'sessions' are reserved"),
        ({"event_type": "x", "table": "sessions"}, "are reserved \\(the router's sessions\\)"),
    ],
)
def test_malformed_schemas_are_refused_with_the_file_named(doc, message):
    with pytest.raises(CatalogError, match=message) as info:
        parse_schema("x.toml", doc)
    assert str(info.value).startswith("x.toml: ")


def test_two_types_cannot_share_a_table_or_a_route():
    a = parse_schema("a.toml", {"event_type": "a", "table": "t", "http": {"routes": ["/a"]}})
    b = parse_schema("b.toml", {"event_type": "b", "table": "t"})
    c = parse_schema("c.toml", {"event_type": "c", "table": "u", "http": {"routes": ["/a"]}})
    with pytest.raises(CatalogError, match="table 't'"):
        build_catalog([a, b])
    with pytest.raises(CatalogError, match="route '/a'"):
        build_catalog([a, c])


def test_a_new_type_is_one_file(tmp_path):
    (tmp_path / "level_up.toml").write_text(
        'event_type = "level_up"\ntable = "level_ups"\n[fields.level]\ntype = "long"\nrequired = true\n'
    )
    catalog = load_schemas(tmp_path)
    assert [t.name for t in catalog.tables()] == ["level_ups", DEAD_LETTER_TABLE, SESSIONS_TABLE]
    assert validate(valid("level_up", level=3), catalog) == []
    assert validate(valid("level_up"), catalog) == ["field 'level': required, missing"]


def test_an_empty_catalog_directory_is_an_error(tmp_path):
    with pytest.raises(CatalogError, match="no event schemas"):
        load_schemas(tmp_path)


def test_a_type_cannot_write_to_the_dead_letter_or_raw_topic(catalog):
    with pytest.raises(CatalogError, match="would write to the topic"):
        catalog.tables("events", "events.level_up")


@pytest.mark.parametrize(
    "event_id, ok",
    [
        ("a", True),
        ("x" * 128, True),
        ("Ab0._:-", True),
        ("", False),
        ("x" * 129, False),
        ("a b", False),
        ("a/b", False),
        ("é", False),
        ("a\n", False),
        (7, False),
        (None, False),
    ],
)
def test_event_id_rule(event_id, ok):
    assert valid_event_id(event_id) is ok


def test_the_router_dead_letters_an_event_id_that_breaks_the_rule(catalog):
    [reason] = validate(valid(event_id="has space"), catalog)
    assert reason == "field 'event_id': expected 1 to 128 characters of A-Z a-z 0-9 . _ : -, got string 'has space'"


def test_event_keys_name_the_source():
    assert (event_key("game-a", "1"), event_key(None, "1")) == (b"game-a/1", b"1")


def test_a_name_of_63_characters_is_the_longest_taken():
    et = parse_schema("x.toml", {"event_type": "a" * 63, "table": "t_0", "fields": {"f1_x": {"type": "string"}}})
    assert (et.name, et.table, et.fields[0].name) == ("a" * 63, "t_0", "f1_x")
