"""How the sink's Spark session is configured: tuning from spark-defaults.conf (or spark-submit),
overridable; what the rows and the checkpoint depend on, always; and the progress log line."""

from types import SimpleNamespace

import pytest

import spark_sink.job as job
from ops.stack import services
from questlog.settings import REPO_ROOT

SHIPPED = REPO_ROOT / "compose" / "spark" / "spark-defaults.conf"


def built_conf(monkeypatch, settings) -> dict:
    conf = {}
    builder = SimpleNamespace(getOrCreate=lambda: None)
    builder.appName = lambda *_: builder
    builder.master = lambda master: conf.update({"master": master}) or builder
    builder.config = lambda key, value: conf.update({key: value}) or builder
    monkeypatch.setattr(job, "SparkSession", SimpleNamespace(builder=builder))
    attached = {}
    monkeypatch.setattr(job, "attach_catalog", lambda spark, s: attached.update(settings=s))
    job.build_session(settings)
    assert attached["settings"] is settings  # the catalog, password included, on the live session
    return conf


def test_the_shipped_spark_defaults_hold_the_same_tuning_as_the_code():
    assert job.read_spark_defaults(SHIPPED) == dict(job.TUNING)


def test_tuning_in_spark_defaults_is_left_to_spark_and_the_rest_is_set(settings, monkeypatch, tmp_path):
    (tmp_path / "spark-defaults.conf").write_text("# mine\nspark.driver.memory   4g\nspark.sql.shuffle.partitions 8\n")
    monkeypatch.setenv("SPARK_CONF_DIR", str(tmp_path))
    monkeypatch.delenv("PYSPARK_GATEWAY_PORT", raising=False)
    conf = built_conf(monkeypatch, settings.replace(spark_master="spark://127.0.0.1:7077"))
    assert "spark.driver.memory" not in conf and "spark.sql.shuffle.partitions" not in conf  # the file's 4g, 8
    assert conf["spark.ui.enabled"] == "false"  # not in the file: the sink's default
    assert conf["master"] == "spark://127.0.0.1:7077" and conf["spark.jars.packages"] == ",".join(job.PACKAGES)
    assert conf["spark.sql.extensions"] == "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"
    # nothing of the catalog's credentials before the JVM starts: that conf is spark-submit's command line
    assert not [k for k in conf if "password" in k or "catalog" in k]
    assert conf["spark.sql.session.timeZone"] == "UTC" and conf["spark.hadoop.fs.defaultFS"] == settings.hdfs_url


def test_under_spark_submit_its_master_packages_and_conf_rule(settings, monkeypatch):
    monkeypatch.setenv("PYSPARK_GATEWAY_PORT", "1")
    import pyspark

    monkeypatch.setattr(
        pyspark,
        "SparkConf",
        lambda: SimpleNamespace(
            getAll=lambda: [("spark.master", "spark://x:7077"), ("spark.sql.shuffle.partitions", "16")]
        ),
    )
    conf = built_conf(monkeypatch, settings)
    assert "master" not in conf and "spark.jars.packages" not in conf and "spark.jars.ivy" not in conf
    assert "spark.sql.shuffle.partitions" not in conf and conf["spark.driver.memory"] == "1g"
    assert conf["spark.sql.session.timeZone"] == "UTC"


@pytest.mark.parametrize("exported", [None, "/etc/spark/conf"])
def test_the_local_sink_reads_compose_spark_unless_spark_conf_dir_is_set(settings, monkeypatch, exported):
    if exported:
        monkeypatch.setenv("SPARK_CONF_DIR", exported)
    else:
        monkeypatch.delenv("SPARK_CONF_DIR", raising=False)
    assert services.sink(settings).env["SPARK_CONF_DIR"] == (exported or str(SHIPPED.parent))


def test_a_progress_line_says_where_the_batch_went():
    line = job.progress_line(
        {
            "batchId": 4,
            "numInputRows": 5000,
            "durationMs": {"triggerExecution": 1500, "addBatch": 1200, "walCommit": 100, "latestOffset": 20},
        }
    )
    assert line == "batch 4: 5000 rows, triggerExecution 1.50s, latestOffset 0.02s, walCommit 0.10s, addBatch 1.20s"


def test_an_upgraded_sink_resumes_where_the_v1_checkpoint_ended_and_reads_new_partitions_from_the_start():
    # One file of Spark's offsets log, as the v1 sink's checkpoint holds it (`offsets/<batch>`).
    log_file = (
        "v1\n"
        '{"batchWatermarkMs":0,"batchTimestampMs":1796420000000,"conf":{"spark.sql.shuffle.partitions":"2"}}\n'
        '{"events.level_up":{"0":120,"1":7},"events.dlq":{"0":3}}\n'
    )
    partitions = {"events.level_up": [0, 1, 2], "events.dlq": [0], "events.open_chest": [0]}
    assert job.resume_offsets(log_file, partitions) == {
        "events.level_up": {"0": 120, "1": 7, "2": -2},
        "events.dlq": {"0": 3},
        "events.open_chest": {"0": -2},
    }


def test_the_catalog_is_the_jdbc_one_trino_reads_and_its_password_comes_from_its_file(tmp_path):
    from questlog.settings import Settings
    from spark_sink.session import attach_catalog, catalog_conf

    (tmp_path / "pw").write_text("s3cret\n")
    settings = Settings.from_env(
        {}, catalog_db_url="postgresql://cat@127.0.0.1:15433/meta", catalog_db_password_file=str(tmp_path / "pw")
    )
    conf = catalog_conf(settings)
    assert conf["spark.sql.catalog.iceberg"] == "org.apache.iceberg.spark.SparkCatalog"
    assert conf["spark.sql.catalog.iceberg.type"] == "jdbc"
    assert conf["spark.sql.catalog.iceberg.uri"] == "jdbc:postgresql://127.0.0.1:15433/meta"
    assert conf["spark.sql.catalog.iceberg.jdbc.user"] == "cat"
    assert conf["spark.sql.catalog.iceberg.jdbc.schema-version"] == "V1"  # what Trino 476 reads
    assert not [k for k in conf if "password" in k]
    live = {}
    attach_catalog(SimpleNamespace(conf=SimpleNamespace(set=lambda k, v: live.update({k: v}))), settings)
    assert live["spark.sql.catalog.iceberg.jdbc.password"] == "s3cret"


def test_only_sparks_kafka_progress_report_failure_restarts_the_query_in_process():
    npe = (
        'java.lang.NullPointerException: Cannot invoke "scala.collection.IterableOps.map(scala.Function1)" '
        "at org.apache.spark.sql.kafka010.KafkaMicroBatchStream$.metrics(KafkaMicroBatchStream.scala:520)"
    )
    assert job.progress_report_failed(npe)
    assert not job.progress_report_failed("org.apache.iceberg.jdbc.UncheckedSQLException: Unknown failure")


def test_a_type_without_its_topic_is_left_out_and_the_others_land(catalog, caplog):
    from spark_sink.job import landable

    tables = catalog.tables("events", "events.dlq")
    topics = [t.topic for t in tables if t.topic != "events.level_up"]
    kept = landable(tables, topics)
    assert [t.name for t in kept] == [t.name for t in tables if t.name != "level_ups"]
    assert "not landing level_ups: their topics do not exist" in caplog.text
