"""Spark's Kafka connector for the installed pyspark: one version, pyspark's (pinned in setup.cfg).

A module of its own, importing nothing but pyspark's version, so that the image build can bake
the connector before the rest of the code is copied in (compose/Dockerfile)."""

from __future__ import annotations

from importlib.metadata import version

SCALA_VERSION = "2.13"  # the only Scala build of pyspark 4
KAFKA_PACKAGE = f"org.apache.spark:spark-sql-kafka-0-10_{SCALA_VERSION}:{version('pyspark')}"

if __name__ == "__main__":
    print(KAFKA_PACKAGE)
