"""`make test`'s two workers (tests/conftest.py): every test of the real pipeline runs on one
worker, in order, so two workers never start the session's pipeline each; the unit tests run on
the other meanwhile. Checked on a small tree of tests that note where they ran."""

import shutil
import subprocess
import sys
from pathlib import Path

from questlog.settings import REPO_ROOT

NOTE = """
import os
from pathlib import Path

def test_where():
    with open(Path(__file__).parents[2] / "ran.txt", "a") as out:
        out.write(f"{{os.environ['PYTEST_XDIST_WORKER']}} {tier} {n}\\n")
"""


def test_the_stack_tests_keep_one_worker_and_their_order(tmp_path: Path):
    tests = tmp_path / "tests"
    for tier in ("e2e", "integration", "unit"):
        (tests / tier).mkdir(parents=True)
        for n in range(4):
            (tests / tier / f"test_{tier}_{n}.py").write_text(NOTE.format(tier=tier, n=n))
    shutil.copy(REPO_ROOT / "tests" / "conftest.py", tests / "conftest.py")
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-n", "2", "--dist", "loadgroup", "tests"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    ran = [line.split() for line in (tmp_path / "ran.txt").read_text().splitlines()]
    assert len(ran) == 12
    stack = [(worker, f"{tier}/{n}") for worker, tier, n in ran if tier != "unit"]
    assert len({worker for worker, _ in stack}) == 1, ran  # one worker for the whole stack
    assert [test for _, test in stack] == [f"{tier}/{n}" for tier in ("e2e", "integration") for n in range(4)]
