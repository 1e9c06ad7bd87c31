"""Questlog: game events over HTTP, routed by Faust, landed by Spark, queried with Trino."""

__version__ = "0.1.0"
