from questlog.catalog import Field, Table
from spark_sink.registry import create_table_sql, missing_columns_sql, register_partition_sql

TABLE = Table(
    "sword_purchases",
    "events.purchase_sword",
    (Field("event_id", "string"), Field("price", "double"), Field("received_at", "timestamp")),
    "received_at",
    ("event_id",),
)


def test_create_table_is_external_parquet_partitioned_by_dt(settings):
    sql = create_table_sql(settings, TABLE)
    assert sql.startswith('CREATE TABLE IF NOT EXISTS "hive"."events"."sword_purchases" (')
    assert '"price" double,' in sql and '"received_at" timestamp(3),' in sql and '"dt" varchar' in sql
    assert "partitioned_by = ARRAY['dt']" in sql
    assert f"external_location = '{settings.hdfs_url}/questlog/warehouse/sword_purchases'" in sql


def test_only_missing_columns_are_added(settings):
    assert missing_columns_sql(settings, TABLE, ["event_id", "received_at", "dt"]) == [
        'ALTER TABLE "hive"."events"."sword_purchases" ADD COLUMN "price" double'
    ]
    assert missing_columns_sql(settings, TABLE, ["event_id", "price", "received_at"]) == []


def test_register_partition_quotes_its_values(settings):
    assert register_partition_sql(settings, "t", "2026-11-29") == (
        "CALL \"hive\".system.register_partition('events', 't', ARRAY['dt'], ARRAY['2026-11-29'])"
    )
