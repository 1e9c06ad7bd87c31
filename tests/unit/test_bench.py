"""The bench's pure parts, and what it writes into the README and docs/ against the committed results."""

import json
import re
from pathlib import Path

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

DOCS = REPO_ROOT / "docs"
DEEP_DIVES = ("collector.md", "client.md", "router.md", "sessions.md", "sink.md", "compaction.md", "operations.md")


def _committed() -> dict:
    return json.loads((RESULTS / "latest.json").read_text())


def _pages() -> list:
    return [p for p in sorted(DOCS.glob("*.md")) if p.name != Path(report.PAGE).name]


def test_the_committed_results_are_one_complete_run():
    """The docs quote one run, a complete `make bench`: every case ran, or its row says why not."""
    from benchmarks.harness import CASES, NAMES

    data = _committed()
    assert data["meta"]["command"] == "make bench" and data["meta"]["size"] == "full"
    assert data["meta"]["cases"] == list(CASES)
    assert report.CASE_ROWS == NAMES
    assert {r["case"] for r in data["rows"]} == set(NAMES.values())
    assert f"Measured {data['meta']['date']} " in (RESULTS / "latest.md").read_text()


def test_every_bench_block_is_the_bench_s_output_from_the_committed_results():
    """Where a deep dive shows figures, they sit in a block between `<!-- bench:CASE[:MEASURE] -->`
    and `<!-- /bench -->` that `make bench` (and `python -m benchmarks.report --docs`, from the
    committed results) fills with that case's rows of latest.json: the same run as performance.md."""
    data = _committed()
    blocks = {}
    for page in _pages():
        text = page.read_text()
        assert text == report.fill_blocks(text, data), (
            f"docs/{page.name}: a bench block differs from what `make bench` writes from "
            "benchmarks/results/latest.json (`python -m benchmarks.report --docs` rewrites it)"
        )
        assert text.count("<!-- bench:") == text.count("<!-- /bench -->") == len(report.BLOCK.findall(text)), page.name
        for b in report.BLOCK.finditer(text):
            assert "| --- |" in b["body"], f"docs/{page.name}: block {b['case']}:{b['measure']} has no row of the run"
            blocks.setdefault(page.name, []).append(b["case"])
    for page in DEEP_DIVES:
        assert page in blocks, f"docs/{page} shows no figure of the last run"
    assert "collector" in blocks["collector.md"] and "sink" in blocks["sink.md"]
    assert "compaction" in blocks["compaction.md"]


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


# A measured figure: a rate, a latency or duration, a size, a ratio or a share.
UNIT = r"(?:(?:req(?:uests)?|events|rows|records)/s|ms|µs|us|s|sec|seconds?|min|minutes?|h|hours?|[KMGT]i?B|kB|bytes|%)"
FIGURE = re.compile(
    rf"(?<![\w.])\d[\d,.]*(?:(?:\s?-\s?|\s(?:to|and)\s)\d[\d,.]*)?"
    rf"(?:\s?{UNIT}(?![\w/])|x\b|\s(?:events|rows|requests|records)\s(?:a|per)\ssecond\b)"
)
# A setting's value written beside its name: `NAME` (value), `NAME`, value or `NAME` = value.
BESIDE_A_NAME = re.compile(r"`[^`]+`(?: \(|, | = )$")
# What else may carry a unit, page by page: values that are configured, or chosen as a test's input,
# or goals, or sizes computed from a layout; never the outcome of a run. Whitespace as in one line.
NOT_MEASURED = {
    "client.md": ("`--bad-share 0.02` makes 2%",),  # the load's input
    "compaction.md": (
        "the goal is within 1.5x",
        "(what 5 minutes are at a commit every 2 s",  # the soak's input, the sink's trigger
    ),
    "compose.md": (  # the heaps configured in compose/, and what they add up to
        "About 6 GB of memory for the containers (the heaps are those of the local stack: Trino 1.5 GiB, "
        "Spark 1 GiB, Kafka 512 MiB, NameNode 384 MiB, DataNode 256 MiB,",
    ),
    "operations.md": (
        "`questlog top` refreshes every 2 s",
        "a sparkline of the last 5 minutes",
        "| 512 MiB |",  # the heaps table: configured
        "| 384 / 256 MiB |",
        "| 4 MiB shared buffers |",
        "| 1536 MiB |",
        "| 1 GiB |",
        "after a backoff of 1 s that doubles with each death up to 60 s and starts again from 1 s once "
        "the service has been healthy for 60 s",
        "At most 5 lines per service per 10 s",
        "4 MiB of shared buffers",
        "for 20 s each",  # the fault suite's pauses
        "CI runs the same suite at 20 events/s",
    ),
    "sink.md": (
        "The goal: at least 0.8x of the minimal job and at least 20,000 rows/s",
        "p50 <= 4 s, p99 <= 10 s",
        "(a trigger of 1 s: 86,400; of 5 s: 17,280)",
        "(about 65 bytes with a UUID id)",  # topic, source and a UUID: counted, not measured
    ),
}


def test_no_doc_quotes_a_measured_figure_outside_the_bench_blocks():
    """A figure with a unit of rate, time, size, ratio or share in docs/*.md is either inside a bench
    block (the last complete run's, checked above) or not a measurement: a setting's value written
    beside its name (`QUESTLOG_SESSION_TICK_S` (10 s)), or one of NOT_MEASURED: configured values
    such as the heaps of docs/operations.md and docs/compose.md, a test's or a load's input, a goal,
    a size counted from a record's layout. What earlier runs measured is in the pages' history and
    the issue notes, not on the pages. docs/performance.md is the bench's own page."""
    quoted = []
    for page in _pages():
        text = " ".join(report.BLOCK.sub("", page.read_text()).split())
        for allowed in NOT_MEASURED.get(page.name, ()):
            assert allowed in text, f"docs/{page.name} no longer says {allowed!r}: drop it from NOT_MEASURED"
            text = text.replace(allowed, " ")
        for m in FIGURE.finditer(text):
            if not BESIDE_A_NAME.search(text[max(0, m.start() - 100) : m.start()]):
                quoted.append(f"docs/{page.name}: ...{text[max(0, m.start() - 50) : m.end()]}")
    assert not quoted, "measured figures outside a bench block (see this test's docstring):\n" + "\n".join(quoted)


def test_the_figure_pattern_finds_what_the_pages_used_to_quote():
    for text in (
        "23,749 rows/s",
        "p50 2.9 s, p99 5.1 s",
        "read 10.1 s",
        "0.84x",
        "1.14-1.25x",
        "peak RSS 1,846 MiB",
        "17-21 µs",
        "10,196 events/s",
        "984 ms",
        "2,475 req/s",
        "40% of it",
        "200 events a second",
    ):
        assert FIGURE.search(text), text
    for text in ("gunicorn 2x8", "2 x 8 threads", "Python 3.11.7", "5xx", "400,000 typed records", "ab -c 16"):
        assert not FIGURE.search(text), text


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings."""
    heads = re.findall(r"^#+ (.+)$", re.sub(r"```.*?```", "", page.read_text(), flags=re.S), re.M)
    return {re.sub(r"[^\w\- ]", "", h.strip().lower()).replace(" ", "-") for h in heads}


def test_every_link_to_a_heading_in_the_readme_and_docs_resolves():
    """Links with an anchor into the README and docs/ name a heading that is there (the pages the
    bench writes into lose and gain headings)."""
    for page in [REPO_ROOT / "README.md", *sorted(DOCS.glob("*.md"))]:
        for target, anchor in re.findall(r"\]\(([^)#:]*)#([^)]+)\)", page.read_text()):
            linked = (page.parent / target) if target else page
            assert anchor in _anchors(linked), f"{page.name}: {target}#{anchor}"
