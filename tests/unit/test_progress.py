"""Long work shows progress: a download's bytes, rate and time left; unpacking; in a log file a
line every few seconds instead of a bar."""

from __future__ import annotations

import io
import os
import tarfile

from ops.stack import artifacts
from ops.stack.artifacts import Meter


def test_a_line_names_bytes_share_rate_and_time_left(monkeypatch):
    out = io.StringIO()
    clock = [100.0]
    monkeypatch.setattr(artifacts.time, "monotonic", lambda: clock[0])
    meter = Meter("fetching trino-server-476.tar.gz", total=800 * 2**20, every_s=5, stream=out)
    clock[0] = 110.0
    meter.update(200 * 2**20)
    clock[0] = 112.0
    meter.update(220 * 2**20)  # within 5 s of the last line: nothing new
    clock[0] = 120.0
    meter.update(400 * 2**20)
    meter.close()
    lines = out.getvalue().splitlines()
    assert lines == [
        "questlog: fetching trino-server-476.tar.gz: 200.0 MiB of 800.0 MiB (25%), 20.0 MiB/s, about 0m30s left",
        "questlog: fetching trino-server-476.tar.gz: 400.0 MiB of 800.0 MiB (50%), 20.0 MiB/s, about 0m20s left",
    ]


def test_without_a_total_bytes_and_rate_only():
    out = io.StringIO()
    meter = Meter("fetching kafka-4.1.1", every_s=0, stream=out)
    meter.update(3 * 2**20)
    assert "fetching kafka-4.1.1: 3.0 MiB, " in out.getvalue() and "left" not in out.getvalue()


def test_the_growing_download_is_what_maven_writes_beside_the_artifact(tmp_path):
    (tmp_path / "trino-server-476.tar.gz.1234.tmp").write_bytes(b"x" * 5000)
    (tmp_path / "trino-server-476.tar.gz.sha1").write_text("abc")
    (tmp_path / "other.jar").write_bytes(b"x" * 9000)
    assert artifacts._growing_file_bytes(tmp_path, "trino-server-476.tar.gz") == 5000
    assert artifacts._growing_file_bytes(tmp_path / "missing", "x") == 0


def test_unpacking_reports_its_progress_and_extracts_everything(tmp_path, monkeypatch, capsys):
    src = tmp_path / "src"
    src.mkdir()
    for i in range(30):
        (src / f"f{i}.bin").write_bytes(os.urandom(20_000))
    tarball = tmp_path / "t.tar.gz"
    with tarfile.open(tarball, "w:gz") as tar:
        tar.add(src, arcname="t")
    monkeypatch.setattr(Meter, "EVERY_S", 0.0)
    artifacts._unpack(tarball, tmp_path / "out", "unpacking t.tar.gz")
    assert sorted(p.name for p in (tmp_path / "out" / "t").iterdir()) == sorted(f"f{i}.bin" for i in range(30))
    lines = [line for line in capsys.readouterr().err.splitlines() if line.startswith("questlog: unpacking t.tar.gz")]
    assert len(lines) >= 10
    assert lines[-1].startswith(f"questlog: unpacking t.tar.gz: {tarball.stat().st_size / 2**20:,.1f} MiB of")
    assert "(100%)" in lines[-1]


def test_a_maven_fetch_reports_the_growing_file_while_maven_runs(tmp_path, monkeypatch, capsys):
    # A stand-in for Maven that writes the download slowly where Maven's local repository keeps it.
    folder = tmp_path / "m2" / "io" / "trino" / "trino-server" / "476"
    script = tmp_path / "bin" / "mvn"
    script.parent.mkdir()
    script.write_text(f"""#!/bin/sh
mkdir -p {folder}
for i in 1 2 3 4 5 6; do head -c 100000 /dev/zero >> {folder}/trino-server-476.tar.gz.77.tmp; sleep 0.3; done
""")
    script.chmod(0o755)
    monkeypatch.setenv("PATH", f"{script.parent}:{os.environ['PATH']}")
    monkeypatch.setattr(Meter, "EVERY_S", 0.0)
    meter = Meter("fetching trino-server-476.tar.gz", 600_000)
    artifacts._mvn(
        tmp_path,
        ["dependency:copy"],
        tmp_path,
        lambda: meter.update(artifacts._growing_file_bytes(folder, "trino-server-476.tar.gz")),
    )
    sizes = [line.split(": ", 2)[2].split(" MiB")[0] for line in capsys.readouterr().err.splitlines()]
    assert len(set(sizes)) >= 3  # it grew while Maven ran, and each step was shown


def test_a_replay_shows_each_step_with_its_counts():
    from ops.replay import Progress

    out = io.StringIO()
    progress = Progress(every_s=0, stream=out)
    progress.step("reading dead letters")
    progress.advance(1000)
    progress.advance(234)
    progress.step("sending", 3)
    for _ in range(3):
        progress.advance()
    progress.end()
    lines = out.getvalue().splitlines()
    assert lines[:2] == [
        "questlog: replay: reading dead letters: 1,000",
        "questlog: replay: reading dead letters: 1,234",
    ]
    assert lines[-1] == "questlog: replay: sending: 3 of 3"
    assert lines.count("questlog: replay: reading dead letters: 1,234") == 2  # and once when the step ended
