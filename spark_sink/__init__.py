"""The Spark sink: typed topics -> parquet on HDFS, partitioned by date -> Trino tables.

Run: `python -m spark_sink.job`.
"""
