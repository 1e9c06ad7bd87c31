"""The bench's pure parts, and the README's performance section against the committed results."""

from benchmarks import report
from benchmarks.cases.collector import parse_ab
from benchmarks.cases.e2e import percentile
from benchmarks.stack import PORT_SHIFT, bench_settings
from questlog.settings import REPO_ROOT, Settings, split_address
from tests.conftest import TEST_OVERRIDES

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
    assert not ports(bench) & ports(Settings.from_env({}, **TEST_OVERRIDES))


def test_the_table_escapes_cells():
    data = {"rows": [{"case": "router", "measure": "a|b", "ours": "1", "baseline": "", "ratio": ""}]}
    assert report.table(data).splitlines()[2] == "| router | a\\|b | 1 | - | - |"


def test_the_readme_shows_the_committed_results_with_date_machine_and_command():
    latest = (RESULTS / "latest.md").read_text()
    readme = (REPO_ROOT / "README.md").read_text()
    assert report.readme_bench_section(readme) == report.readme_section(latest, "benchmarks/results"), (
        "README's performance section differs from benchmarks/results/latest.md: run `make bench`"
    )
    section = report.readme_bench_section(readme)
    assert "Measured 20" in section and " cores, " in section and " GiB RAM" in section
    assert "`make bench`" in section
    for png in ("throughput.png", "latency.png", "rss.png"):
        assert f"](benchmarks/results/{png})" in section
        assert (RESULTS / png).stat().st_size > 10_000
