"""Questlog's Python client, for game servers: ``from questlog_client import Tracker``.

Its own distribution (``questlog_client/pyproject.toml``, ``pip install ./questlog_client``): it
needs only ``requests``, never Spark, Faust, Flask or Kafka. With the ``questlog`` package beside
it, ``Tracker`` also checks events against the deployed catalog as they are tracked.
"""

from questlog_client.tracker import InvalidEvent, Stats, Tracker, backoff

__all__ = ["InvalidEvent", "Stats", "Tracker", "backoff"]
