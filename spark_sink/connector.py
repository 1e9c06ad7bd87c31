"""The JVM packages the sink loads into Spark, resolved from Maven Central by Spark's own Ivy into
`$QUESTLOG_CACHE/ivy` (each download checked against the checksum Maven Central publishes):

* Spark's Kafka connector for the installed pyspark: one version, pyspark's (pinned in setup.cfg);
* Iceberg's Spark runtime for that Spark line (a shaded jar, no dependencies of its own);
* PostgreSQL's JDBC driver, for the Iceberg JDBC catalog (Trino brings its own).

A module of its own, importing nothing but pyspark's version, so that the image build can bake
the packages before the rest of the code is copied in (compose/Dockerfile)."""

from __future__ import annotations

from importlib.metadata import version

SCALA_VERSION = "2.13"  # the only Scala build of pyspark 4
SPARK_VERSION = version("pyspark")
SPARK_LINE = ".".join(SPARK_VERSION.split(".")[:2])
ICEBERG_VERSION = "1.12.0"
POSTGRES_JDBC_VERSION = "42.7.14"
KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_VERSION}:{SPARK_VERSION}"
ICEBERG_PACKAGE = f"org.apache.iceberg:iceberg-spark-runtime-{SPARK_LINE}_{SCALA_VERSION}:{ICEBERG_VERSION}"
POSTGRES_PACKAGE = f"org.postgresql:postgresql:{POSTGRES_JDBC_VERSION}"
PACKAGES = (KAFKA_PACKAGE, ICEBERG_PACKAGE, POSTGRES_PACKAGE)

if __name__ == "__main__":
    print(",".join(PACKAGES))
