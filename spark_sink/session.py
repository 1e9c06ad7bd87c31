"""Spark with the Iceberg catalog that Trino shares: the sink's session, and anyone's.

The catalog is Iceberg's JDBC catalog on PostgreSQL (QUESTLOG_CATALOG_DB_URL), named like Trino's
(QUESTLOG_TRINO_CATALOG, `iceberg`), so a table has the same name in both engines:
`iceberg.events.sword_purchases`. Read a table from Python:

    from spark_sink.session import catalog_session
    spark = catalog_session()                     # local[2], the settings of QUESTLOG_* variables
    spark.table("iceberg.events.sword_purchases").show()

The database password is set on the running session (`spark.conf.set`), read from
QUESTLOG_CATALOG_DB_PASSWORD_FILE: a SparkConf given before the JVM starts would be on
spark-submit's command line, which any local user can read.
"""

from __future__ import annotations

from pathlib import Path

from pyspark.sql import SparkSession

from questlog.settings import Settings
from spark_sink.connector import PACKAGES

ICEBERG_EXTENSIONS = "org.apache.iceberg.spark.extensions.IcebergSparkSessionExtensions"


def kafka_options(settings: Settings) -> dict[str, str]:
    """The Kafka source's connection options: the brokers and, with SASL on, this process's user
    (the local stack's sink is `questlog-sink`, which may read the typed topics and nothing else);
    the password read from its file, handed to Spark in this process, never on a command line."""
    options = {"kafka.bootstrap.servers": settings.kafka_bootstrap}
    if settings.kafka_sasl:
        scram = settings.kafka_sasl_mechanism.startswith("SCRAM")
        module = "scram.ScramLoginModule" if scram else "plain.PlainLoginModule"
        password = settings.kafka_password().replace("\\", "\\\\").replace('"', '\\"')
        options.update(
            {
                "kafka.security.protocol": "SASL_PLAINTEXT",
                "kafka.sasl.mechanism": settings.kafka_sasl_mechanism,
                "kafka.sasl.jaas.config": (
                    f'org.apache.kafka.common.security.{module} required username="{settings.kafka_user}" '
                    f'password="{password}";'
                ),
            }
        )
    return options


def catalog_conf(settings: Settings) -> dict[str, str]:
    """The Spark settings of the Iceberg catalog, all but its password."""
    prefix = f"spark.sql.catalog.{settings.trino_catalog}"
    return {
        prefix: "org.apache.iceberg.spark.SparkCatalog",
        f"{prefix}.type": "jdbc",
        f"{prefix}.uri": settings.catalog_jdbc_url,
        f"{prefix}.jdbc.user": settings.catalog_db_user,
        # V1: the catalog tables with `iceberg_type`, which Trino 476 reads (its default schema version)
        f"{prefix}.jdbc.schema-version": "V1",
        f"{prefix}.warehouse": settings.warehouse_url,
        # every batch reads the table's current metadata: the compactor (through Trino) commits too,
        # and a streaming query writes through a catalog of its own (Spark clones the session), so
        # a cached table in another session would be stale (measured: a count of 0 after appends)
        f"{prefix}.cache-enabled": "false",
        # one connection: each catalog call is one short statement at a time, and every connection
        # is a backend process of PostgreSQL (about 16 MiB of RSS each), which stays under 100 MiB
        f"{prefix}.clients": "1",
    }


def attach_catalog(spark: SparkSession, settings: Settings) -> None:
    """Give a running session the catalog (before its first use), the password included."""
    for key, value in catalog_conf(settings).items():
        spark.conf.set(key, value)
    spark.conf.set(f"spark.sql.catalog.{settings.trino_catalog}.jdbc.password", settings.catalog_db_password())


def catalog_session(settings: Settings | None = None, master: str | None = None) -> SparkSession:
    """A Spark session (local, or ``master``) that reads and writes the pipeline's Iceberg tables."""
    settings = settings or Settings.from_env()
    spark = (
        SparkSession.builder.appName("questlog-reader")
        .master(master or settings.spark_master)
        .config("spark.jars.packages", ",".join(PACKAGES))
        .config("spark.jars.ivy", str(Path(settings.cache) / "ivy"))
        .config("spark.sql.extensions", ICEBERG_EXTENSIONS)
        .config("spark.sql.session.timeZone", "UTC")
        .config("spark.ui.enabled", "false")
        .config("spark.hadoop.fs.defaultFS", settings.hdfs_url)
        .config("spark.hadoop.dfs.client.use.datanode.hostname", "true")
        .getOrCreate()
    )
    attach_catalog(spark, settings)
    return spark
