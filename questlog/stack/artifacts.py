"""JVM artifacts from Maven Central, fetched once with Maven and cached under QUESTLOG_CACHE.

Versions are pinned here and nowhere else (compose/ image tags are checked against them).
"""

from __future__ import annotations

import logging
import shutil
import subprocess
import sys
import tarfile
import time
from pathlib import Path
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
HADOOP_VERSION = "3.5.0"
TRINO_VERSION = "476"
LOG4J_VERSION = "2.24.3"

KAFKA_DEPS = [
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
]
HADOOP_DEPS = [
    f"org.apache.hadoop:hadoop-hdfs:{HADOOP_VERSION}",
    f"org.apache.hadoop:hadoop-hdfs-client:{HADOOP_VERSION}",
    f"org.apache.hadoop:hadoop-common:{HADOOP_VERSION}",
]
# The full server tarball: the hive plugin of `trino-server-core` + `trino-hive` lacks the HDFS
# file system (its `hdfs/` directory), which is published only inside the full server.
TRINO_SERVER = f"io.trino:trino-server:{TRINO_VERSION}:tar.gz"
TRINO_CLI = f"io.trino:trino-cli:{TRINO_VERSION}:jar:executable"
TRINO_PLUGINS = ("hive",)


class FetchError(RuntimeError):
    pass


def _say(message: str) -> None:
    print(f"questlog: {message}", file=sys.stderr, flush=True)


def _mvn(cache: Path, args: list[str], cwd: Path) -> None:
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError("Maven (`mvn`) is needed to fetch JVM artifacts; `make run` installs it, "
                         "or: apt-get install maven")
    cmd = [mvn, "-B", "-ntp", "-q", f"-Dmaven.repo.local={cache / 'm2'}", *args]
    result = subprocess.run(cmd, cwd=cwd, capture_output=True, text=True)
    if result.returncode != 0:
        tail = "\n".join((result.stdout + result.stderr).strip().splitlines()[-15:])
        raise FetchError(f"Maven failed ({' '.join(args[:2])}):\n{tail}")


def _pom(name: str, deps: list[str]) -> str:
    rows = []
    for coordinate in deps:
        group, artifact, version = coordinate.split(":")
        rows.append(f"<dependency><groupId>{escape(group)}</groupId><artifactId>{escape(artifact)}</artifactId>"
                    f"<version>{escape(version)}</version></dependency>")
    return ("<project xmlns=\"http://maven.apache.org/POM/4.0.0\"><modelVersion>4.0.0</modelVersion>"
            f"<groupId>questlog</groupId><artifactId>{name}</artifactId><version>1</version>"
            f"<packaging>pom</packaging><dependencies>{''.join(rows)}</dependencies></project>\n")


def _done(target: Path) -> bool:
    return (target / ".complete").exists()


def _finish(target: Path, staging: Path, started: float, what: str) -> Path:
    (staging / ".complete").write_text(time.strftime("%Y-%m-%dT%H:%M:%S"))
    if target.exists():
        shutil.rmtree(target)
    staging.rename(target)
    size = sum(f.stat().st_size for f in target.rglob("*") if f.is_file()) / 2**20
    _say(f"{what} ready ({size:.0f} MiB, {time.monotonic() - started:.0f}s) in {target}")
    return target


def maven_classpath(cache: Path, name: str, deps: list[str]) -> Path:
    """A directory with ``deps`` and their runtime dependencies (jars), fetched once."""
    target = cache / "dist" / name
    if _done(target):
        return target
    _say(f"fetching {name} from Maven Central (once; cached in {cache})...")
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    (staging / "pom.xml").write_text(_pom(name, deps))
    _mvn(cache, ["dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=lib"], staging)
    return _finish(target, staging, started, name)


def maven_file(cache: Path, coordinate: str) -> Path:
    """One artifact file (e.g. a tar.gz or an executable jar), fetched once."""
    parts = coordinate.split(":")
    group, artifact, version, packaging = parts[:4]
    classifier = parts[4] if len(parts) > 4 else None
    name = f"{artifact}-{version}" + (f"-{classifier}" if classifier else "") + f".{packaging}"
    target = cache / "dist" / "files" / name
    if target.exists():
        return target
    _say(f"fetching {name} from Maven Central (once)...")
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    _mvn(cache, ["dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={target.parent}"],
         target.parent)
    if not target.exists():
        raise FetchError(f"Maven reported success but {target} is missing")
    _say(f"{name}: {target.stat().st_size / 2**20:.0f} MiB in {time.monotonic() - started:.0f}s")
    return target


def kafka(cache: Path) -> Path:
    return maven_classpath(cache, f"kafka-{KAFKA_VERSION}", KAFKA_DEPS) / "lib"


def hadoop(cache: Path) -> Path:
    """Hadoop's HDFS jars. The Maven jars lack the `webapps/` the daemons' HTTP servers look up on
    the classpath, so minimal ones are added (WebHDFS and JMX are servlets, not files there)."""
    root = maven_classpath(cache, f"hadoop-{HADOOP_VERSION}", HADOOP_DEPS)
    for app in ("hdfs", "datanode", "secondary", "static"):
        web_inf = root / "webroot" / "webapps" / app / "WEB-INF"
        if not (web_inf / "web.xml").exists():
            web_inf.mkdir(parents=True, exist_ok=True)
            (web_inf / "web.xml").write_text(
                '<?xml version="1.0" encoding="UTF-8"?>\n'
                '<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1"></web-app>\n')
    return root


def trino_server(cache: Path) -> Path:
    """Trino's server: lib/ and the plugins we use (the rest of the tarball is dropped)."""
    target = cache / "dist" / f"trino-server-{TRINO_VERSION}"
    if _done(target):
        return target
    tarball = maven_file(cache, TRINO_SERVER)
    _say(f"unpacking Trino {TRINO_VERSION} (lib + {', '.join(TRINO_PLUGINS)} plugin)...")
    started = time.monotonic()
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    with tarfile.open(tarball) as tar:
        tar.extractall(staging, filter="tar")  # hard links inside point at other plugins
    inner = staging / f"trino-server-{TRINO_VERSION}"
    for plugin in (inner / "plugin").iterdir():
        if plugin.name not in TRINO_PLUGINS:
            shutil.rmtree(plugin)
    for entry in inner.iterdir():
        entry.rename(staging / entry.name)
    inner.rmdir()
    return _finish(target, staging, started, f"trino-server-{TRINO_VERSION}")


def trino_cli(cache: Path) -> Path:
    return maven_file(cache, TRINO_CLI)


def fetch_all(cache: Path) -> None:
    kafka(cache)
    hadoop(cache)
    trino_server(cache)
    trino_cli(cache)
