"""The bench's outputs: the table (printed and in latest.md), the plots, docs/performance.md and the
bench blocks of the other pages under docs/.

``python -m benchmarks.report --docs`` rewrites the pages from the committed results without running
anything; a complete `make bench` rewrites them with the same functions when it finishes."""

from __future__ import annotations

import argparse
import json
import os
import re
import sys
from pathlib import Path

# docs/performance.md is this module's output, whole: what the bench measures (the intro beside this
# module, with the budget from the code), then the last complete run's latest.md. Nobody edits it by
# hand; tests/unit/test_bench.py checks that it is what these functions make of the committed results.
PAGE = "docs/performance.md"
INTRO = Path(__file__).with_name("performance_intro.md")
GENERATED = "<!-- written by `make bench` (benchmarks/report.py) from benchmarks/results/latest.md; do not edit -->"

QUESTLOG_COLOR = "#1f6fb4"
BASELINE_COLORS = ["#f28e2b", "#9c9c9c", "#59a14f", "#b07aa1", "#e15759"]


def table(data: dict) -> str:
    lines = [
        "| case | measurement | Questlog | baseline (same run) | Questlog / baseline |",
        "| --- | --- | --- | --- | --- |",
    ]
    for r in data["rows"]:
        cells = [r["case"], r["measure"], r["ours"], r["baseline"] or "-", r["ratio"] or "-"]
        lines.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    return "\n".join(lines)


def markdown(data: dict, plots: list[str]) -> str:
    m = data["meta"]
    out = [
        "# Questlog benchmark",
        "",
        f"Measured {m['date']} on {m['machine']}, with `{m['command']}` (size {m['size']}, cases: "
        f"{', '.join(m['cases'])}; the whole run took {m['seconds'] / 60:.1f} min).",
        "Each figure is Questlog's stage beside a baseline from `benchmarks/baselines/`, measured in the same "
        "run on the same machine, which is shared with other work: absolute figures are noisy, the ratios "
        "less so. Ratios above 1 favour Questlog.",
        "",
        table(data),
        "",
    ]
    if data.get("notes"):
        out += ["Notes:", ""] + [f"- {n}" for n in data["notes"]] + [""]
    if plots:
        out += ["Plots: " + ", ".join(f"[{p}]({p})" for p in plots), ""]
        out += [f"![{p}]({p})" for p in plots] + [""]
    return "\n".join(out)


def performance_page(latest: str, results_rel: str, budget_s: float) -> str:
    """docs/performance.md from ``latest.md``: the intro, then the run's figures, headings one
    level down and its plots linked from ``results_rel`` (the results seen from the page)."""
    body = latest.split("\n", 1)[1].lstrip("\n")  # latest.md's title: the page has its own
    body = re.sub(r"\]\(([\w.-]+\.png)\)", lambda m: f"]({results_rel}/{m.group(1)})", body)
    intro = INTRO.read_text().strip().format(budget_min=f"{budget_s / 60:.0f}")
    return f"# Performance\n\n{GENERATED}\n\n{intro}\n\n## The last run\n\n{body.rstrip()}\n"


def write_performance_page(page: Path, latest: str, out_dir: Path, budget_s: float) -> None:
    """What a complete run leaves in docs/: the performance page from ``latest``, and every bench
    block of the pages beside it from the run's latest.json (written next to latest.md before this)."""
    rel = Path(os.path.relpath(out_dir.resolve(), page.resolve().parent)).as_posix()
    page.write_text(performance_page(latest, rel, budget_s))
    write_blocks(page.parent, json.loads((out_dir / "latest.json").read_text()), skip=page.name)


# Bench blocks ------------------------------------------------------------------------------------

# A deep dive under docs/ quotes no measurement of its own: where a figure belongs beside the
# reasoning, the page holds a block that this module fills with that case's rows of the last complete
# run, the same latest.json docs/performance.md is written from:
#
#     <!-- bench:collector -->            every row (and note) of the collector case
#     <!-- bench:router:sessions agent --> the router rows whose measurement contains "sessions agent"
#     <!-- /bench -->
#
# The case is named as `make bench CASE=...` names it; what is between the markers is replaced.
# tests/unit/test_bench.py checks that every block is what these functions make of the committed
# results, and that no page quotes a measured figure outside them.
CASE_ROWS = {
    "start": "start",
    "collector": "collector",
    "client": "client",
    "router": "router",
    "sink": "sink",
    "e2e": "end to end",
    "compaction": "compaction",
}  # `make bench CASE=` names -> the rows' case column (the harness names its rows with it)
BLOCK = re.compile(
    r"(?P<open><!-- bench:(?P<case>[\w-]+)(?::(?P<measure>[^>]*?))? -->\n)(?P<body>.*?)(?P<close><!-- /bench -->)", re.S
)
NOT_RUN = ("SKIPPED", "FAILED")  # the measurement of a case's only row when it did not run


def block_rows(data: dict, case: str, measure: str | None = None) -> list[dict]:
    """The run's rows of ``case`` (whose measurement contains ``measure``, if given); when the case
    did not run, the row that says so."""
    if case not in CASE_ROWS:
        raise ValueError(f"bench block of unknown case {case!r}; known: {', '.join(CASE_ROWS)}")
    rows = [r for r in data["rows"] if r["case"] == CASE_ROWS[case]]
    if measure is None:
        return rows
    return [r for r in rows if measure in r["measure"]] or [r for r in rows if r["measure"] in NOT_RUN]


def block(data: dict, case: str, measure: str | None = None) -> str:
    """What goes between a block's markers: where the figures come from, the rows without the case
    column, and the case's notes (for a block of the whole case)."""
    rows = block_rows(data, case, measure)
    m = data["meta"]
    which = f"its {CASE_ROWS[case]} rows" + (f' with "{measure}" in the measurement' if measure else "")
    out = [
        f"*From the last complete `{m['command']}` ({m['date']}, {m['machine']}): {which}. Written by "
        "`make bench` from benchmarks/results/latest.json (do not edit); the whole run is on "
        "[performance.md](performance.md).*",
        "",
    ]
    if rows:
        out += [
            "| measurement | Questlog | baseline (same run) | Questlog / baseline |",
            "| --- | --- | --- | --- |",
        ]
        for r in rows:
            cells = [r["measure"], r["ours"], r["baseline"] or "-", r["ratio"] or "-"]
            out.append("| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |")
    else:
        out.append(f"(No row of this run matches: case {CASE_ROWS[case]!r}, measurement {measure!r}.)")
    notes = [n for n in data.get("notes") or [] if n.startswith(f"{CASE_ROWS[case]}: ")] if measure is None else []
    if notes:
        out += ["", "Notes of the run:", ""] + [f"- {n}" for n in notes]
    return "\n".join(out) + "\n\n"  # a blank line ends the table before the closing marker


def fill_blocks(text: str, data: dict) -> str:
    """``text`` with every bench block's body made from ``data``; the rest of it unchanged."""
    return BLOCK.sub(
        lambda b: b["open"] + block(data, b["case"], b["measure"]) + b["close"],
        text,
    )


def write_blocks(docs: Path, data: dict, skip: str = "") -> list[Path]:
    """Fills the bench blocks of every page under ``docs`` (but ``skip``); returns the pages changed."""
    changed = []
    for page in sorted(docs.glob("*.md")):
        if page.name == skip:
            continue
        text = page.read_text()
        filled = fill_blocks(text, data)
        if filled != text:
            page.write_text(filled)
            changed.append(page)
    return changed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.report",
        description="Rewrites what `make bench` writes under docs/ from results already measured, "
        "running nothing: docs/performance.md from latest.md, every bench block from latest.json.",
    )
    parser.add_argument("--docs", action="store_true", help="rewrite docs/performance.md and the bench blocks")
    parser.add_argument(
        "--results",
        type=Path,
        default=None,
        metavar="DIR",
        help="a complete run's latest.md and latest.json (default: benchmarks/results)",
    )
    args = parser.parse_args(argv)
    if not args.docs:
        parser.error("nothing to do: --docs rewrites the pages")
    from benchmarks.context import SIZES
    from questlog.settings import REPO_ROOT

    results = args.results or REPO_ROOT / "benchmarks" / "results"
    data = json.loads((results / "latest.json").read_text())
    if data["meta"]["command"] != "make bench":
        print(
            f"{results}: a run of `{data['meta']['command']}`, not a complete `make bench`: "
            "the docs quote only complete runs",
            file=sys.stderr,
        )
        return 1
    page = REPO_ROOT / PAGE
    before = {p: p.read_text() for p in page.parent.glob("*.md")}
    write_performance_page(page, (results / "latest.md").read_text(), results, SIZES[data["meta"]["size"]].budget_s)
    for p in sorted(before):
        if p.read_text() != before[p]:
            print(f"rewrote {p.relative_to(REPO_ROOT)}")
    return 0


# Plots ------------------------------------------------------------------------------------------


def plot(data: dict, out_dir: Path) -> list[str]:
    import matplotlib

    matplotlib.use("Agg")
    made = []
    for name, draw in (("throughput.png", _throughput), ("latency.png", _latency), ("rss.png", _rss)):
        if draw(data, out_dir / name):
            made.append(name)
    return made


def _fmt(v: float) -> str:
    return f"{v:,.0f}" if v >= 10 else f"{v:,.1f}"


def _throughput(data: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    items = data.get("throughput") or []
    if not items:
        return False
    titles = {
        ("collector", "requests/s"): "Collector, GET /purchase_a_sword (ab)",
        ("collector", "events/s"): "Collector, POST /events",
        ("router", "events/s"): "Router, draining a backlog of raw events",
        ("sink", "rows/s"): "Sink, Kafka to parquet (ours: until queryable in Trino)",
        ("client", "events/s"): "Python client (questlog_client) sending to the collector",
    }
    panels: dict[tuple[str, str], list[dict]] = {}
    for it in items:
        panels.setdefault((it["stage"], it["unit"]), []).append(it)
    names = list(dict.fromkeys(it["baseline_name"] for it in items))
    color = {n: BASELINE_COLORS[i % len(BASELINE_COLORS)] for i, n in enumerate(names)}
    n = len(panels)
    cols = 2 if n > 1 else 1
    rows = (n + cols - 1) // cols
    fig, axes = plt.subplots(rows, cols, figsize=(7.5 * cols, 4.6 * rows), squeeze=False)
    for ax, ((stage, unit), its) in zip(axes.flat, panels.items(), strict=False):
        measures = list(dict.fromkeys(it["measure"] for it in its))
        per = {m: [it for it in its if it["measure"] == m] for m in measures}
        width = 0.8 / (1 + max(len(v) for v in per.values()))
        for x, m in enumerate(measures):
            group = per[m]
            bars = [("Questlog", group[0]["ours"] or 0, QUESTLOG_COLOR)] + [
                (g["baseline_name"], g["baseline"] or 0, color[g["baseline_name"]]) for g in group
            ]
            for k, (label, value, c) in enumerate(bars):
                pos = x - 0.4 + width * (k + 0.5)
                ax.bar(pos, value, width, color=c, label=label)
                text = _fmt(value)
                if k and group[0]["ours"] and value:
                    text += f"\nQuestlog\n= {group[0]['ours'] / value:.2f}x"
                ax.annotate(
                    text,
                    (pos, value),
                    ha="center",
                    va="bottom",
                    fontsize=7.5,
                    xytext=(0, 2),
                    textcoords="offset points",
                )
        ax.set_xticks(range(len(measures)), measures, fontsize=8.5)
        ax.set_ylabel(f"{unit} (higher is better)")
        ax.set_title(titles.get((stage, unit), f"{stage} ({unit})"), fontsize=10.5)
        ax.margins(y=0.3)
        handles, labels = ax.get_legend_handles_labels()
        uniq = dict(zip(labels, handles, strict=True))
        ax.legend(uniq.values(), uniq.keys(), fontsize=8, loc="upper left")
        ax.grid(axis="y", alpha=0.3)
    for ax in list(axes.flat)[n:]:
        ax.axis("off")
    fig.suptitle(
        f"Throughput: each stage of Questlog (blue) beside what a user would otherwise run (other colours),\n"
        f"measured one after the other in the same run; over a baseline's bar: Questlog's ratio to it\n"
        f"({data['meta']['date']}, {data['meta']['machine']})",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


def _latency(data: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    runs = data.get("latency") or []
    if not runs:
        return False
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(14, 4.8), gridspec_kw={"width_ratios": [3, 2]})
    colors = ["#1f6fb4", "#e15759", "#59a14f", "#b07aa1"]
    longest = max((max(r["latencies"]) for r in runs if r["latencies"]), default=1.0)
    bins = [longest * 1.02 * k / 30 for k in range(31)]
    for i, r in enumerate(runs):
        lat = sorted(r["latencies"])
        c = colors[i % len(colors)]
        label = f"{r['rate']:,} events/s: {r['landed']} of {r['probes']} probes landed" + (
            f"; p50 {r['p50']:.1f} s, p90 {r['p90']:.1f} s, p99 {r['p99']:.1f} s" if lat else ""
        )
        if lat:
            ys = [(k + 1) / max(r["probes"], 1) * 100 for k in range(len(lat))]
            ax.step([0] + lat, [0] + ys, where="post", color=c, label=label, linewidth=2)
            for q, style in (("p50", ":"), ("p99", "--")):
                ax.axvline(r[q], color=c, linestyle=style, alpha=0.6, linewidth=1)
            bx.hist(lat, bins=bins, alpha=0.55, color=c, label=f"{r['rate']:,} events/s")
        else:
            ax.plot([], [], color=c, label=label)
    ax.set_xlabel("seconds from sending an event to the collector until Trino returns it")
    ax.set_ylabel("% of probe events queryable")
    ax.set_ylim(0, 102)
    ax.set_xlim(0, longest * 1.05)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8.5, loc="upper left")
    ax.set_title("Cumulative: share of probes queryable after x seconds (dotted p50, dashed p99)", fontsize=10)
    bx.set_xlabel("seconds from send to queryable")
    bx.set_ylabel("probes")
    bx.set_xlim(0, longest * 1.05)
    bx.set_title("Distribution", fontsize=10)
    bx.grid(alpha=0.3)
    bx.legend(fontsize=8.5)
    fig.suptitle(
        "End to end: HTTP -> Kafka -> router -> sink -> Trino, under a steady load of POST /events\n"
        "(one probe event a second, polled in Trino twice a second)",
        fontsize=12,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


STACK = ("kafka", "namenode", "datanode", "trino")
PIPELINE = ("collector", "router", "sink")
DESCRIBE = {
    "kafka": "Kafka broker",
    "namenode": "HDFS NameNode",
    "datanode": "HDFS DataNode",
    "trino": "Trino",
    "collector": "collector (Flask, 2 workers)",
    "router": "router (Faust)",
    "sink": "sink (Spark local[2])",
}


def _rss(data: dict, path: Path) -> bool:
    import matplotlib.pyplot as plt

    series = data.get("rss", {}).get("series") or {}
    if not series:
        return False
    peaks = {n: max(v for _, v in s) / 2**20 for n, s in series.items() if s}
    order = [n for n in STACK + PIPELINE if n in peaks] + [n for n in peaks if n not in STACK + PIPELINE]
    fig, (ax, bx) = plt.subplots(1, 2, figsize=(15, 0.42 * len(order) + 2.4), gridspec_kw={"width_ratios": [2, 3]})
    kind_color = {"stack": "#9c9c9c", "pipeline": QUESTLOG_COLOR, "copy": "#8fbbe0", "baseline": "#f28e2b"}

    def kind(n: str) -> str:
        if n in STACK or n in PIPELINE:
            return "stack" if n in STACK else "pipeline"
        return "baseline" if "baseline" in n else "copy"

    labels = [DESCRIBE.get(n, n) for n in order]
    ax.barh(range(len(order)), [peaks[n] for n in order], color=[kind_color[kind(n)] for n in order])
    for y, n in enumerate(order):
        ax.annotate(
            f"{peaks[n]:,.0f} MiB", (peaks[n], y), xytext=(3, 0), textcoords="offset points", va="center", fontsize=8
        )
    ax.set_yticks(range(len(order)), labels, fontsize=8.5)
    ax.invert_yaxis()
    ax.set_xlabel("peak resident memory (MiB), process group summed")
    ax.margins(x=0.25)
    ax.set_title(
        "Peak RSS per service. Grey: Kafka, HDFS, Trino. Blue: Questlog's pipeline;\n"
        "light blue: copies of its stages a case started. Orange: baselines.",
        fontsize=9.5,
    )
    ax.grid(axis="x", alpha=0.3)
    for n in [n for n in STACK + PIPELINE if n in series]:
        ts = series[n]
        bx.plot([t / 60 for t, _ in ts], [v / 2**20 for _, v in ts], label=DESCRIBE.get(n, n), linewidth=1.4)
    ymax = max((peaks[n] for n in STACK + PIPELINE if n in peaks), default=1)
    for i, (name, start, end) in enumerate(data["rss"].get("phases") or []):
        bx.axvspan(start / 60, end / 60, color="#000000", alpha=0.04 + 0.04 * (i % 2))
        bx.annotate(name, ((start + end) / 120, ymax * 1.05), ha="center", fontsize=8)
    bx.set_ylim(0, ymax * 1.15)
    bx.set_xlabel("minutes since the bench started (shaded: which case was running)")
    bx.set_ylabel("RSS (MiB)")
    bx.set_title("RSS of the pipeline's services over the run", fontsize=10)
    bx.legend(fontsize=8, ncol=4, loc="upper center", bbox_to_anchor=(0.5, -0.12))
    bx.grid(alpha=0.3)
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return True


if __name__ == "__main__":
    sys.exit(main())
