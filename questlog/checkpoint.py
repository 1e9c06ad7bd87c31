"""The sink's progress as its Spark checkpoint on HDFS records it, read over WebHDFS with the
standard library: `questlog status` shows the sink's lag from it, and the compactor waits on it
before erasing a forgotten player (nothing routed before the request may still be on its way)."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

from questlog.settings import Settings


def webhdfs(settings: Settings, path: str, op: str, timeout: float) -> bytes:
    """One WebHDFS GET (OPEN follows the redirect to the DataNode)."""
    url = f"{settings.webhdfs_url}/webhdfs/v1{path}?op={op}&user.name=questlog"
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read()


def sink_progress(settings: Settings, timeout: float = 5.0) -> tuple[int | None, dict[str, dict[int, int]]]:
    """(the last batch the sink committed, {topic: {partition: next offset to read}} after it):
    Spark's offsets log `<checkpoint>/sink-v2/offsets/<n>` for the highest n with a `commits/<n>`;
    (None, {}) before its first batch."""
    root = settings.sink_checkpoint_dir
    try:
        listing = json.loads(webhdfs(settings, f"{root}/commits", "LISTSTATUS", timeout))
    except urllib.error.HTTPError as exc:
        if exc.code == 404:  # no batch committed yet
            return None, {}
        raise
    commits = [int(s["pathSuffix"]) for s in listing["FileStatuses"]["FileStatus"] if s["pathSuffix"].isdigit()]
    if not commits:
        return None, {}
    lines = webhdfs(settings, f"{root}/offsets/{max(commits)}", "OPEN", timeout).decode().splitlines()
    offsets: dict[str, dict[int, int]] = {}
    for line in lines[2:]:  # v1, the batch's metadata, then one line per source
        line = line.strip()
        if line.startswith("{"):
            for topic, parts in json.loads(line).items():
                offsets[topic] = {int(p): int(o) for p, o in parts.items()}
    return max(commits), offsets
