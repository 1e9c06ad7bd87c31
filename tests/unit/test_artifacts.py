"""Downloads are verified (ops/stack/artifacts.py), without the network: a fake `mvn` on PATH
does what Maven does (copies artifacts out of its local repository, where the checksums Maven
Central publishes lie beside them), and corrupts one file when a test asks it to."""

import hashlib
import os
import stat
import sys
import textwrap
from pathlib import Path

import pytest

from ops.stack import artifacts
from ops.stack.artifacts import ChecksumError, FetchError

GOOD = b"the published bytes\n"
BAD = b"the published bytes, tampered with\n"

FAKE_MVN = textwrap.dedent("""\
    #!{python}
    # A stand-in for Maven: records its arguments, then copies from the local repository.
    import os, shutil, sys
    from pathlib import Path

    args = sys.argv[1:]
    with open(os.environ["FAKE_MVN_LOG"], "a") as log:
        log.write(" ".join(args) + "\\n")
    if os.environ.get("FAKE_MVN_FAIL") == "checksum":
        print("[ERROR] Failed to execute goal ...: Could not transfer artifact org.example:lib:jar:1.0 from/to "
              "central: Checksum validation failed, expected abc but is def", file=sys.stderr)
        sys.exit(1)
    if os.environ.get("FAKE_MVN_FAIL"):
        print("[ERROR] Could not resolve dependencies for project questlog:example:pom:1", file=sys.stderr)
        sys.exit(1)
    repo = Path(next(a.split("=", 1)[1] for a in args if a.startswith("-Dmaven.repo.local=")))
    out = next(a.split("=", 1)[1] for a in args if a.startswith("-DoutputDirectory="))
    out = Path(out) if os.path.isabs(out) else Path.cwd() / out
    out.mkdir(parents=True, exist_ok=True)
    for path in repo.rglob("*"):
        if path.is_file() and path.suffix in (".jar", ".gz"):
            shutil.copy(path, out / path.name)
    corrupt = os.environ.get("FAKE_MVN_CORRUPT")
    if corrupt:
        (out / corrupt).write_bytes({bad!r})
""")


@pytest.fixture
def mvn(tmp_path, monkeypatch):
    """A fake `mvn` first on PATH; returns the file its arguments are logged to."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    script = bin_dir / "mvn"
    script.write_text(FAKE_MVN.format(python=sys.executable, bad=BAD))
    script.chmod(script.stat().st_mode | stat.S_IXUSR)
    log = tmp_path / "mvn.log"
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_MVN_LOG", str(log))
    monkeypatch.delenv("FAKE_MVN_CORRUPT", raising=False)
    monkeypatch.delenv("FAKE_MVN_FAIL", raising=False)
    return log


def publish(
    cache: Path, group: str, artifact: str, version: str, name: str, content: bytes, sha1: str | None = None
) -> Path:
    """An artifact in Maven's local repository with the .sha1 Maven Central published for it."""
    path = cache / "m2" / group.replace(".", "/") / artifact / version / name
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(content)
    path.with_name(name + ".sha1").write_text((sha1 or hashlib.sha1(content).hexdigest()) + "\n")
    return path


def sha256(content: bytes) -> str:
    return hashlib.sha256(content).hexdigest()


def leftovers(directory: Path) -> list[str]:
    return sorted(p.name for p in directory.iterdir()) if directory.exists() else []


# The checks themselves ---------------------------------------------------------------------------


def test_a_file_matching_its_pinned_sha256_passes(tmp_path):
    f = tmp_path / "trino-cli.jar"
    f.write_bytes(GOOD)
    artifacts.verify_sha256(f, sha256(GOOD))


def test_a_corrupted_file_is_refused_against_its_pinned_sha256(tmp_path):
    f = tmp_path / "trino-cli.jar"
    f.write_bytes(BAD)
    with pytest.raises(
        ChecksumError,
        match=rf"checksum mismatch for trino-cli.jar: SHA-256 {sha256(BAD)}, "
        rf"expected {sha256(GOOD)}",
    ):
        artifacts.verify_sha256(f, sha256(GOOD))


def test_a_copy_matching_the_published_sha1_passes(tmp_path):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", GOOD)
    copy = tmp_path / "lib-1.0.jar"
    copy.write_bytes(GOOD)
    artifacts.verify_against_repository([copy], cache / "m2")


def test_a_corrupted_copy_is_refused_against_the_published_sha1(tmp_path):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", GOOD)
    copy = tmp_path / "lib-1.0.jar"
    copy.write_bytes(BAD)
    with pytest.raises(
        ChecksumError,
        match=rf"lib-1.0.jar: SHA1 {hashlib.sha1(BAD).hexdigest()}, "
        rf"Maven Central publishes {hashlib.sha1(GOOD).hexdigest()}",
    ):
        artifacts.verify_against_repository([copy], cache / "m2")


def test_a_repository_file_that_differs_from_its_published_sha1_is_refused(tmp_path):
    cache = tmp_path / "cache"
    published = publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", BAD, sha1=hashlib.sha1(GOOD).hexdigest())
    with pytest.raises(ChecksumError, match="lib-1.0.jar"):
        artifacts.verify_against_repository([published], cache / "m2")


def test_the_strongest_published_checksum_is_used(tmp_path):
    cache = tmp_path / "cache"
    path = publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", BAD, sha1=hashlib.sha1(BAD).hexdigest())
    path.with_name(path.name + ".sha512").write_text(hashlib.sha512(GOOD).hexdigest() + "  lib-1.0.jar\n")
    with pytest.raises(ChecksumError, match="SHA512"):
        artifacts.verify_against_repository([path], cache / "m2")


def test_a_file_without_a_published_checksum_is_refused(tmp_path):
    cache = tmp_path / "cache"
    path = publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", GOOD)
    path.with_name(path.name + ".sha1").unlink()
    with pytest.raises(ChecksumError, match="no published checksum for lib-1.0.jar"):
        artifacts.verify_against_repository([path], cache / "m2")


def test_the_pinned_checksums_are_sha256_of_the_pinned_versions():
    assert set(artifacts.PINNED_SHA256) == {artifacts.TRINO_SERVER, artifacts.TRINO_CLI, artifacts.JMX_AGENT}
    for coordinate, value in artifacts.PINNED_SHA256.items():
        version = artifacts.JMX_EXPORTER_VERSION if coordinate == artifacts.JMX_AGENT else artifacts.TRINO_VERSION
        assert f":{version}:" in coordinate
        assert len(value) == 64 and int(value, 16) >= 0


# Fetching: Maven's strict checksums, and nothing half-installed ----------------------------------


def test_maven_runs_with_strict_checksums(tmp_path, mvn):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", GOOD)
    target = artifacts.maven_classpath(cache, "example", ["org.example:lib:1.0"])
    assert "--strict-checksums" in mvn.read_text().split()
    assert (target / ".complete").exists() and (target / "lib" / "lib-1.0.jar").read_bytes() == GOOD


def test_a_corrupted_classpath_jar_stops_the_fetch_and_leaves_nothing(tmp_path, mvn, monkeypatch):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "lib", "1.0", "lib-1.0.jar", GOOD)
    monkeypatch.setenv("FAKE_MVN_CORRUPT", "lib-1.0.jar")
    with pytest.raises(ChecksumError, match="checksum mismatch for lib-1.0.jar"):
        artifacts.maven_classpath(cache, "example", ["org.example:lib:1.0"])
    assert leftovers(cache / "dist") == []  # no staging directory, no tree, no .complete


def test_a_download_maven_refuses_stops_the_fetch_and_leaves_nothing(tmp_path, mvn, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAKE_MVN_FAIL", "checksum")  # what Maven 3.8 prints with --strict-checksums
    with pytest.raises(
        ChecksumError,
        match="does not match the checksum Maven Central publishes"
        "(.|\n)*Checksum validation failed, expected abc but is def",
    ):
        artifacts.maven_classpath(cache, "example", ["org.example:lib:1.0"])
    assert leftovers(cache / "dist") == []
    with pytest.raises(ChecksumError):
        artifacts.maven_file(cache, "org.example:tool:2:jar:executable", "0" * 64)
    assert leftovers(cache / "dist" / "files") == []


def test_any_other_maven_failure_leaves_nothing_either(tmp_path, mvn, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("FAKE_MVN_FAIL", "other")
    with pytest.raises(FetchError, match="Maven failed(.|\n)*Could not resolve dependencies"):
        artifacts.maven_classpath(cache, "example", ["org.example:lib:1.0"])
    assert leftovers(cache / "dist") == []


def test_a_file_is_fetched_when_it_matches_its_pin(tmp_path, mvn):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "tool", "2", "tool-2-executable.jar", GOOD)
    path = artifacts.maven_file(cache, "org.example:tool:2:jar:executable", sha256(GOOD))
    assert path == cache / "dist" / "files" / "tool-2-executable.jar" and path.read_bytes() == GOOD
    assert leftovers(path.parent) == ["tool-2-executable.jar"]


def test_a_corrupted_file_stops_the_fetch_and_leaves_nothing(tmp_path, mvn, monkeypatch):
    cache = tmp_path / "cache"
    published = publish(cache, "org.example", "tool", "2", "tool-2-executable.jar", GOOD)
    monkeypatch.setenv("FAKE_MVN_CORRUPT", "tool-2-executable.jar")
    with pytest.raises(ChecksumError, match="checksum mismatch for tool-2-executable.jar"):
        artifacts.maven_file(cache, "org.example:tool:2:jar:executable", sha256(GOOD))
    assert leftovers(cache / "dist" / "files") == []
    assert not published.exists()  # Maven's copy goes too: the next attempt downloads it again


def test_a_cached_file_that_no_longer_matches_is_fetched_again(tmp_path, mvn):
    cache = tmp_path / "cache"
    publish(cache, "org.example", "tool", "2", "tool-2-executable.jar", GOOD)
    cached = cache / "dist" / "files" / "tool-2-executable.jar"
    cached.parent.mkdir(parents=True)
    cached.write_bytes(BAD)
    assert artifacts.maven_file(cache, "org.example:tool:2:jar:executable", sha256(GOOD)).read_bytes() == GOOD
    assert mvn.exists()  # Maven was asked again


def test_a_corrupted_trino_tarball_is_never_unpacked(tmp_path, mvn, monkeypatch):
    cache = tmp_path / "cache"
    version = artifacts.TRINO_VERSION
    publish(cache, "io.trino", "trino-server", version, f"trino-server-{version}.tar.gz", BAD)
    with pytest.raises(ChecksumError, match=f"trino-server-{version}.tar.gz"):
        artifacts.trino_server(cache)
    assert leftovers(cache / "dist") == ["files"] and leftovers(cache / "dist" / "files") == []
