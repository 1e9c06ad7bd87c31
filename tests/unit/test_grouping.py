"""`make test`'s two workers: every test of the real pipeline is in one xdist group (one worker,
one stack) by the time pytest-xdist reads the groups, so two workers never start the session's
pipeline each; no unit test is in it."""

import json
import subprocess
import sys

from questlog.settings import REPO_ROOT

PROBE = """
import json, sys, pytest

class Groups:
    seen = {}

    @pytest.hookimpl(trylast=True)  # after every other plugin's, xdist's included
    def pytest_collection_modifyitems(self, items):
        for item in items:
            self.seen[item.nodeid] = [m.args[0] for m in item.iter_markers("xdist_group")]

groups = Groups()
code = pytest.main(["--collect-only", "-q", "-p", "no:cacheprovider", *sys.argv[1:]], plugins=[groups])
print("GROUPS " + json.dumps(groups.seen))
sys.exit(int(code))
"""


def test_every_stack_test_and_no_unit_test_is_in_the_stack_group():
    done = subprocess.run(
        [sys.executable, "-c", PROBE, "tests/e2e", "tests/integration", "tests/unit/test_docs.py"],
        cwd=REPO_ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    seen = json.loads(next(line for line in done.stdout.splitlines() if line.startswith("GROUPS "))[7:])
    assert len(seen) > 50
    for nodeid, groups in seen.items():
        stack = nodeid.startswith(("tests/e2e/", "tests/integration/"))
        assert groups == (["stack"] if stack else []), nodeid
