"""JVM artifacts from Maven Central, fetched once with Maven and cached under QUESTLOG_CACHE.

Versions are pinned here and nowhere else (compose/ image tags are checked against them).

Nothing unverified is installed. Maven runs with strict checksums (`-C`): a download whose
SHA-1 differs from the `.sha1` Maven Central publishes next to it fails. Each jar copied into a
classpath is then checked again against that published checksum (kept beside it in the local
repository), and the two files used directly, Trino's server tarball and CLI, against SHA-256
values pinned here. On a mismatch the staging directory is removed, nothing is marked complete,
and the message names the file and both checksums.
"""

from __future__ import annotations

import hashlib
import logging
import os
import shutil
import subprocess
import sys
import tarfile
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from xml.sax.saxutils import escape

log = logging.getLogger(__name__)

KAFKA_VERSION = "4.1.1"
HADOOP_VERSION = "3.5.0"
TRINO_VERSION = "476"
LOG4J_VERSION = "2.24.3"
JMX_EXPORTER_VERSION = "1.0.1"
MAVEN_CENTRAL = "https://repo.maven.apache.org/maven2"

KAFKA_DEPS = [
    f"org.apache.kafka:kafka_2.13:{KAFKA_VERSION}",
    f"org.apache.logging.log4j:log4j-slf4j-impl:{LOG4J_VERSION}",
]
HADOOP_DEPS = [
    f"org.apache.hadoop:hadoop-hdfs:{HADOOP_VERSION}",
    f"org.apache.hadoop:hadoop-hdfs-client:{HADOOP_VERSION}",
    f"org.apache.hadoop:hadoop-common:{HADOOP_VERSION}",
]
# The full server tarball: the iceberg plugin of `trino-server-core` + `trino-iceberg` lacks the
# HDFS file system (its `hdfs/` directory), which is published only inside the full server. Its
# Iceberg is 1.9.1 and it brings PostgreSQL's JDBC driver (42.7.6) for the JDBC catalog.
TRINO_SERVER = f"io.trino:trino-server:{TRINO_VERSION}:tar.gz"
TRINO_CLI = f"io.trino:trino-cli:{TRINO_VERSION}:jar:executable"
# iceberg: the tables; password-authenticators: the file authenticator (ops/stack/trino_security.py)
TRINO_PLUGINS = ("iceberg", "password-authenticators")
# The Prometheus JMX exporter's javaagent: Kafka's and Trino's JVM heap for Prometheus
# (compose/jmx/jmx-exporter.yaml).
JMX_AGENT = f"io.prometheus.jmx:jmx_prometheus_javaagent:{JMX_EXPORTER_VERSION}:jar"
# SHA-256 of the files fetched for direct use (their SHA-1 equals Maven Central's .sha1;
# no .sha512 is published for them).
PINNED_SHA256 = {
    TRINO_SERVER: "cfd5accde17e8ebd251eeeb78aed1f490e77bb3a164d95a0f454bf8a7c1cbd3f",
    TRINO_CLI: "fe4e9c7fb569cd67673afa1622945f6308e1e59bdb825419352b80887661757b",
    JMX_AGENT: "7d61f737fd661610ccc14aea79764faa1ea94a340cbc8f0029b3d2edea3d80c1",
}


class FetchError(RuntimeError):
    pass


class ChecksumError(FetchError):
    """A file is not the one published: a corrupted or tampered download."""


def digest(path: Path, algorithm: str) -> str:
    h = hashlib.new(algorithm)
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def verify_sha256(path: Path, expected: str) -> None:
    got = digest(path, "sha256")
    if got != expected.lower():
        raise ChecksumError(
            f"checksum mismatch for {path.name}: SHA-256 {got}, expected {expected} "
            "(pinned in ops/stack/artifacts.py); the file is not the one published"
        )


def published_checksum(artifact: Path) -> tuple[str, str] | None:
    """(algorithm, hex digest) from the checksum file Maven keeps beside ``artifact`` in its local
    repository, as downloaded from Maven Central; the strongest one there."""
    for algorithm in ("sha512", "sha256", "sha1"):
        sidecar = artifact.with_name(artifact.name + "." + algorithm)
        if sidecar.exists():
            words = sidecar.read_text(errors="replace").split()
            if words:
                return algorithm, words[0].lower()
    return None


def verify_against_repository(files: list[Path], repository: Path) -> None:
    """Each file equals an artifact of the same name in the Maven ``repository`` whose published
    checksum it matches; raises ChecksumError naming the first that does not."""
    names = {f.name for f in files}
    candidates: dict[str, list[Path]] = {}
    for path in repository.rglob("*"):
        if path.name in names and path.is_file():
            candidates.setdefault(path.name, []).append(path)
    for f in sorted(files):
        published = [c for c in (published_checksum(p) for p in candidates.get(f.name, [])) if c]
        if not published:
            raise ChecksumError(f"no published checksum for {f.name} in {repository}; refusing to use it")
        got = {algorithm: digest(f, algorithm) for algorithm, _ in published}
        if not any(got[algorithm] == value for algorithm, value in published):
            algorithm, value = published[0]
            raise ChecksumError(
                f"checksum mismatch for {f.name}: {algorithm.upper()} {got[algorithm]}, "
                f"Maven Central publishes {value}; the file is not the one published"
            )


def _say(message: str) -> None:
    print(f"questlog: {message}", file=sys.stderr, flush=True)


def _size(n: float) -> str:
    return f"{n / 2**20:,.1f} MiB"


class Meter:
    """Progress of one long step on stderr: a rich bar (bytes, rate, ETA) on a terminal, a line
    every ``every_s`` seconds otherwise (a log file, CI). ``update(done, total)`` in bytes; a
    total of None shows bytes and rate only."""

    EVERY_S = 10.0

    def __init__(self, what: str, total: int | None = None, every_s: float | None = None, stream=None) -> None:
        self.what, self.total = what, total
        self.every_s = self.EVERY_S if every_s is None else every_s
        self.stream = stream if stream is not None else sys.stderr
        self.started = self.last_line = time.monotonic()
        self.done = 0
        self._bar = None
        if getattr(self.stream, "isatty", lambda: False)():
            from rich.console import Console
            from rich.progress import (
                BarColumn,
                DownloadColumn,
                Progress,
                TextColumn,
                TimeRemainingColumn,
                TransferSpeedColumn,
            )

            self._bar = Progress(
                TextColumn(f"questlog: {what}"),
                BarColumn(),
                DownloadColumn(binary_units=True),
                TransferSpeedColumn(),
                TimeRemainingColumn(),
                console=Console(file=self.stream),
                transient=True,
            )
            self._task = self._bar.add_task(what, total=total)
            self._bar.start()

    def line(self) -> str:
        took = max(time.monotonic() - self.started, 1e-9)
        rate = self.done / took
        text = f"{self.what}: {_size(self.done)}"
        if self.total:
            text += f" of {_size(self.total)} ({100 * self.done / self.total:.0f}%)"
        text += f", {_size(rate)}/s"
        if self.total and rate > 0 and self.done < self.total:
            left = (self.total - self.done) / rate
            text += f", about {left // 60:.0f}m{left % 60:02.0f}s left"
        return text

    def update(self, done: int, total: int | None = None) -> None:
        self.done = done
        if total is not None:
            self.total = total
        if self._bar is not None:
            self._bar.update(self._task, completed=done, total=self.total)
        elif time.monotonic() - self.last_line >= self.every_s:
            self.last_line = time.monotonic()
            print(f"questlog: {self.line()}", file=self.stream, flush=True)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.stop()
            self._bar = None


def _tree_bytes(root: Path) -> int:
    total = 0
    for folder, _, files in os.walk(root):
        for name in files:
            try:
                total += os.stat(os.path.join(folder, name)).st_size
            except OSError:  # renamed or removed meanwhile
                pass
    return total


def _growing_file_bytes(folder: Path, prefix: str) -> int:
    """The size of the largest file named ``prefix``* in ``folder``: Maven's download in progress
    (a temporary file beside the artifact) or the artifact itself."""
    try:
        return max(
            (
                e.stat().st_size
                for e in os.scandir(folder)
                if e.name.startswith(prefix) and not e.name.endswith((".sha1", ".md5", ".sha256", ".sha512", ".asc"))
            ),
            default=0,
        )
    except OSError:
        return 0


def _published_size(group: str, artifact: str, version: str, name: str) -> int | None:
    """The size Maven Central gives for a file (a HEAD request), for the progress' ETA; None if
    it does not answer within a few seconds (the download shows bytes and rate only then)."""
    import urllib.request

    url = f"{MAVEN_CENTRAL}/{group.replace('.', '/')}/{artifact}/{version}/{name}"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, method="HEAD"), timeout=5) as response:
            return int(response.headers["Content-Length"])
    except Exception:
        return None


def _mvn(cache: Path, args: list[str], cwd: Path, progress: Callable[[], None] | None = None) -> None:
    """Run Maven; while it runs, call ``progress`` every half second (it watches the download)."""
    mvn = shutil.which("mvn")
    if mvn is None:
        raise FetchError(
            "Maven (`mvn`) is needed to fetch JVM artifacts; `make run` installs it, or: apt-get install maven"
        )
    # --strict-checksums: a download that does not match Maven Central's checksum fails.
    cmd = [mvn, "-B", "-ntp", "-q", "--strict-checksums", f"-Dmaven.repo.local={cache / 'm2'}", *args]
    with tempfile.TemporaryFile() as out:
        proc = subprocess.Popen(cmd, cwd=cwd, stdout=out, stderr=subprocess.STDOUT)
        try:
            while proc.poll() is None:
                if progress is not None:
                    progress()
                try:
                    proc.wait(0.5)
                except subprocess.TimeoutExpired:
                    pass
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        out.seek(0)
        output = out.read().decode(errors="replace")
    if proc.returncode != 0:
        lines = output.strip().splitlines()
        mismatches = [line for line in lines if "Checksum validation failed" in line]
        if mismatches:  # --strict-checksums refused a download: say that first, whatever else follows
            raise ChecksumError(
                "a download does not match the checksum Maven Central publishes; nothing "
                "was installed:\n" + "\n".join(mismatches[:5])
            )
        tail = "\n".join(lines[-15:])
        raise FetchError(f"Maven failed ({' '.join(args[:2])}):\n{tail}")


def _pom(name: str, deps: list[str]) -> str:
    rows = []
    for coordinate in deps:
        group, artifact, version = coordinate.split(":")
        rows.append(
            f"<dependency><groupId>{escape(group)}</groupId><artifactId>{escape(artifact)}</artifactId>"
            f"<version>{escape(version)}</version></dependency>"
        )
    return (
        '<project xmlns="http://maven.apache.org/POM/4.0.0"><modelVersion>4.0.0</modelVersion>'
        f"<groupId>questlog</groupId><artifactId>{name}</artifactId><version>1</version>"
        f"<packaging>pom</packaging><dependencies>{''.join(rows)}</dependencies></project>\n"
    )


def _done(target: Path) -> bool:
    return (target / ".complete").exists()


def _staging(target: Path) -> Path:
    staging = target.with_name(target.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    return staging


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
    staging = _staging(target)
    try:
        (staging / "pom.xml").write_text(_pom(name, deps))
        repo = cache / "m2"
        before = _tree_bytes(repo)
        meter = Meter(f"fetching {name}")
        last = [0.0]

        def progress() -> None:  # a walk of the local repository every 2 s: bytes downloaded so far
            if time.monotonic() - last[0] >= 2.0:
                last[0] = time.monotonic()
                meter.update(max(0, _tree_bytes(repo) - before))

        try:
            _mvn(
                cache,
                ["dependency:copy-dependencies", "-DincludeScope=runtime", "-DoutputDirectory=lib"],
                staging,
                progress,
            )
        finally:
            meter.close()
        verify_against_repository(sorted((staging / "lib").glob("*")), cache / "m2")
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _finish(target, staging, started, name)


def maven_file(cache: Path, coordinate: str, sha256: str) -> Path:
    """One artifact file (e.g. a tar.gz or an executable jar), fetched once and checked against
    ``sha256`` whenever it is asked for (a cached copy too)."""
    parts = coordinate.split(":")
    group, artifact, version, packaging = parts[:4]
    classifier = parts[4] if len(parts) > 4 else None
    name = f"{artifact}-{version}" + (f"-{classifier}" if classifier else "") + f".{packaging}"
    target = cache / "dist" / "files" / name
    if target.exists():
        try:
            verify_sha256(target, sha256)
            return target
        except ChecksumError as exc:
            _say(f"{exc}: removed, fetching it again")
            target.unlink()
    _say(f"fetching {name} from Maven Central (once)...")
    started = time.monotonic()
    staging = _staging(target.parent / f".{name}")
    try:
        folder = cache / "m2" / group.replace(".", "/") / artifact / version
        meter = Meter(f"fetching {name}", _published_size(group, artifact, version, name))
        try:
            _mvn(
                cache,
                ["dependency:copy", f"-Dartifact={coordinate}", f"-DoutputDirectory={staging}"],
                staging,
                lambda: meter.update(_growing_file_bytes(folder, name)),
            )
        finally:
            meter.close()
        fetched = staging / name
        if not fetched.exists():
            raise FetchError(f"Maven reported success but {fetched} is missing")
        try:
            verify_sha256(fetched, sha256)
        except ChecksumError:
            # Maven's own copy too, so that the next attempt downloads (and checks) it afresh.
            (cache / "m2" / group.replace(".", "/") / artifact / version / name).unlink(missing_ok=True)
            raise
        fetched.rename(target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
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
                '<web-app xmlns="http://xmlns.jcp.org/xml/ns/javaee" version="3.1"></web-app>\n'
            )
    return root


def trino_server(cache: Path) -> Path:
    """Trino's server: lib/ and the plugins we use (the rest of the tarball is dropped)."""
    target = cache / "dist" / f"trino-server-{TRINO_VERSION}-{'-'.join(TRINO_PLUGINS)}"
    if _done(target):
        return target
    tarball = maven_file(cache, TRINO_SERVER, PINNED_SHA256[TRINO_SERVER])
    _say(f"unpacking Trino {TRINO_VERSION} (lib + {', '.join(TRINO_PLUGINS)} plugin)...")
    started = time.monotonic()
    staging = _staging(target)
    try:
        _unpack(tarball, staging, f"unpacking {tarball.name}")
        inner = staging / f"trino-server-{TRINO_VERSION}"
        for plugin in (inner / "plugin").iterdir():
            if plugin.name not in TRINO_PLUGINS:
                shutil.rmtree(plugin)
        for entry in inner.iterdir():
            entry.rename(staging / entry.name)
        inner.rmdir()
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return _finish(target, staging, started, f"trino-server-{TRINO_VERSION}")


def _unpack(tarball: Path, into: Path, what: str) -> None:
    """Extract ``tarball`` into ``into``, showing progress as compressed bytes read."""
    meter = Meter(what, tarball.stat().st_size)
    try:
        with open(tarball, "rb") as raw, tarfile.open(fileobj=raw, mode="r:*") as tar:

            def members():
                for member in tar:
                    meter.update(raw.tell())
                    yield member

            tar.extractall(into, members=members(), filter="tar")  # hard links inside point at other plugins
            meter.update(tarball.stat().st_size)
    finally:
        meter.close()


def trino_cli(cache: Path) -> Path:
    return maven_file(cache, TRINO_CLI, PINNED_SHA256[TRINO_CLI])


def jmx_agent(cache: Path) -> Path:
    return maven_file(cache, JMX_AGENT, PINNED_SHA256[JMX_AGENT])


def fetch_all(cache: Path) -> None:
    jmx_agent(cache)
    kafka(cache)
    hadoop(cache)
    trino_server(cache)
    trino_cli(cache)
