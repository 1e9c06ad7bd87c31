"""The local stack: Kafka, HDFS and Trino as plain processes on 127.0.0.1, then the pipeline.

Artifacts come from Maven Central once and are cached under QUESTLOG_CACHE; all state lives
under QUESTLOG_HOME. Service configs are the ones in `compose/`, shared with docker compose.
"""
