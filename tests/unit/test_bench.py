"""The bench's pure parts, and what it writes into the README and docs/ against the committed results."""

import json
import re

import pytest

from benchmarks import report
from benchmarks.cases.collector import parse_ab
from benchmarks.cases.e2e import percentile
from benchmarks.stack import PORT_SHIFT, bench_settings
from questlog.settings import REPO_ROOT, Settings, split_address
from tests.conftest import stack_settings

RESULTS = REPO_ROOT / "benchmarks" / "results"

AB_OUTPUT = """
Concurrency Level:      16
Time taken for tests:   2.003 seconds
Complete requests:      1000
Failed requests:        3
Non-2xx responses:      2
Requests per second:    509.12 [#/sec] (mean)

Percentage of the requests served within a certain time (ms)
  50%     27
  66%     31
  99%     95
 100%    120 (longest request)
"""


def test_ab_output_is_read_for_rate_failures_and_percentiles():
    assert parse_ab(AB_OUTPUT) == {"rps": 509.12, "complete": 1000, "failed": 3, "non2xx": 2, "p50": 27, "p99": 95}
    assert parse_ab("Requests per second:    80.5 [#/sec] (mean)\n")["failed"] == 0


def test_percentiles_are_nearest_rank():
    values = [float(v) for v in range(100, 0, -1)]
    assert (percentile(values, 50), percentile(values, 90), percentile(values, 99)) == (50.0, 90.0, 99.0)
    assert percentile([3.0], 99) == 3.0
    assert percentile([], 50) is None


def test_the_bench_runs_beside_make_run_and_the_tests(tmp_path):
    bench = bench_settings(tmp_path)
    default = Settings.from_env({})
    assert bench.home == str(tmp_path)
    assert bench.kafka_port == default.kafka_port + PORT_SHIFT
    assert bench.collector_port == default.collector_port + PORT_SHIFT
    assert bench.trino_port == default.trino_port + PORT_SHIFT

    def ports(s: Settings) -> set[int]:
        return {
            s.kafka_port,
            s.kafka_controller_port,
            s.collector_port,
            s.router_web_port,
            split_address(s.hdfs_rpc_address)[1],
            split_address(s.webhdfs_address)[1],
            s.hdfs_datanode_port,
            s.trino_port,
            split_address(s.sink_metrics_bind)[1],
        }

    assert not ports(bench) & ports(default)
    assert not ports(bench) & ports(stack_settings(tmp_path))


def test_the_table_escapes_cells():
    data = {"rows": [{"case": "router", "measure": "a|b", "ours": "1", "baseline": "", "ratio": ""}]}
    assert report.table(data).splitlines()[2] == "| router | a\\|b | 1 | - | - |"


def test_the_performance_page_is_the_bench_s_output_from_the_committed_results():
    """docs/performance.md is written only by `make bench` (benchmarks/report.py): it is exactly what
    the writer makes of the committed latest.md, which names its date, machine and command."""
    from benchmarks.context import SIZES

    latest = (RESULTS / "latest.md").read_text()
    page = (REPO_ROOT / report.PAGE).read_text()
    assert page == report.performance_page(latest, "../benchmarks/results", SIZES["full"].budget_s), (
        "docs/performance.md differs from what `make bench` writes from benchmarks/results/latest.md"
    )
    assert "Measured 20" in page and " cores, " in page and " GiB RAM" in page
    assert "`make bench`" in page and f"budget of {SIZES['full'].budget_s / 60:.0f} minutes" in page
    for png in ("throughput.png", "latency.png", "rss.png"):
        assert f"](../benchmarks/results/{png})" in page
        assert (RESULTS / png).stat().st_size > 10_000


def test_the_readme_has_no_measured_figure_and_points_to_the_performance_page():
    """The README quotes no measurement (rates, latencies, sizes, durations): those are the bench's,
    on docs/performance.md."""
    readme = (REPO_ROOT / "README.md").read_text()
    assert "(docs/performance.md)" in readme
    units = r"(?:req/s|events/s|rows/s|ms|µs|MiB|GiB|min(?:utes)?|s)\b"
    figures = re.findall(rf"\b\d[\d,.]*\s?{units}", readme)
    assert not figures, f"the README quotes figures; they belong to `make bench`: {figures}"


# docs/: every measured figure is the last complete run's -----------------------------------------


def _committed() -> dict:
    return json.loads((RESULTS / "latest.json").read_text())


def test_the_committed_results_are_one_complete_run():
    """The docs quote one run, a complete `make bench`: every case ran, or its row says why not."""
    from benchmarks.harness import CASES, NAMES

    data = _committed()
    assert data["meta"]["command"] == "make bench" and data["meta"]["size"] == "full"
    assert data["meta"]["cases"] == list(CASES)
    assert report.CASE_ROWS == NAMES
    assert {r["case"] for r in data["rows"]} == set(NAMES.values())
    assert f"Measured {data['meta']['date']} " in (RESULTS / "latest.md").read_text()


def test_a_block_shows_its_case_s_rows_or_why_it_did_not_run():
    data = {
        "meta": {"command": "make bench", "date": "D", "machine": "M"},
        "rows": [
            {"case": "router", "measure": "drain (1 worker)", "ours": "1", "baseline": "", "ratio": ""},
            {"case": "router", "measure": "drain (2 workers)", "ours": "2", "baseline": "b|c", "ratio": "2x"},
            {"case": "compaction", "measure": "SKIPPED", "ours": "not run", "baseline": "", "ratio": ""},
        ],
        "notes": ["router: a note", "sink: another"],
    }
    text = (
        "a\n<!-- bench:router:workers -->\nold\n<!-- /bench -->\nb\n<!-- bench:compaction:count -->\n<!-- /bench -->\n"
    )
    filled = report.fill_blocks(text, data)
    assert filled.startswith("a\n<!-- bench:router:workers -->\n*From the last complete `make bench` (D, M)")
    assert "| drain (2 workers) | 2 | b\\|c | 2x |" in filled and "(1 worker)" not in filled
    assert "| SKIPPED | not run | - | - |" in filled and "old" not in filled
    assert "a note" not in filled  # notes only in a block of the whole case
    assert "- router: a note" in report.block(data, "router") and "another" not in report.block(data, "router")
    assert report.fill_blocks(filled, data) == filled
    with pytest.raises(ValueError, match="unknown case"):
        report.fill_blocks("<!-- bench:routr -->\n<!-- /bench -->", data)


def test_a_complete_run_rewrites_the_blocks_with_the_performance_page(tmp_path):
    """`make bench` writes docs/ through report.write_performance_page: the page and every block."""
    docs, out = tmp_path / "docs", tmp_path / "results"
    docs.mkdir()
    out.mkdir()
    (out / "latest.json").write_text((RESULTS / "latest.json").read_text())
    (docs / "sink.md").write_text("# Sink\n\n<!-- bench:sink -->\nhand-copied\n<!-- /bench -->\n")
    report.write_performance_page(docs / "performance.md", (RESULTS / "latest.md").read_text(), out, 960)
    assert (docs / "sink.md").read_text() == report.fill_blocks((docs / "sink.md").read_text(), _committed())
    assert "hand-copied" not in (docs / "sink.md").read_text()
    assert "](../results/throughput.png)" in (docs / "performance.md").read_text()
