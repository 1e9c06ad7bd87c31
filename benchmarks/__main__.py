"""python -m benchmarks [--case CASE] [--size full|tiny]: see benchmarks/__init__.py."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from benchmarks import report
from benchmarks.context import SIZES
from benchmarks.harness import CASES, run
from benchmarks.stack import BENCH_HOME, bench_settings
from ops.stack.runner import Pipeline
from questlog.settings import REPO_ROOT

RESULTS = REPO_ROOT / "benchmarks" / "results"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks",
        description="Every stage of Questlog against its baseline, in one run, on a pipeline of its own "
        "(.questlog-bench/, ports shifted by 20000; QUESTLOG_BENCH_HOME and QUESTLOG_BENCH_PORT_OFFSET "
        "move them). Prints one table; writes it with plots.",
    )
    parser.add_argument(
        "--case", default="all", metavar="CASE", help=f"all (default), or a comma-separated list of: {', '.join(CASES)}"
    )
    parser.add_argument(
        "--size",
        default="full",
        choices=("full", "tiny"),
        help=f"full: the figures (within a budget of {SIZES['full'].budget_s / 60:.0f} min); tiny: only checks that every case runs",
    )
    parser.add_argument(
        "--out",
        default=None,
        metavar="DIR",
        help="where latest.md, latest.json and the plots go (default: benchmarks/results for a "
        "full run of every case, which also rewrites docs/performance.md; the bench's "
        "home's results/ otherwise)",
    )
    parser.add_argument(
        "--attach",
        action="store_true",
        help="use the pipeline already running in .questlog-bench/ (from --keep) instead of "
        "starting one; the start case then times only the first query",
    )
    parser.add_argument("--keep", action="store_true", help="leave the bench's pipeline running at the end")
    args = parser.parse_args(argv)
    cases = list(CASES) if args.case == "all" else [c.strip() for c in args.case.split(",") if c.strip()]
    unknown = [c for c in cases if c not in CASES]
    if unknown:
        parser.error(f"unknown case(s): {', '.join(unknown)}; known: {', '.join(CASES)}")
    complete = args.size == "full" and set(cases) == set(CASES)
    out = RESULTS if args.out is None and complete else (BENCH_HOME / "results" if args.out is None else args.out)
    command = (
        "make bench"
        if complete
        else f"make bench CASE={','.join(cases)}" + (f" SIZE={args.size}" if args.size != "full" else "")
    )
    pipeline = Pipeline(bench_settings()) if args.attach else None
    run(
        cases,
        args.size,
        Path(out),
        pipeline=pipeline,
        command=command,
        keep=args.keep,
        page=REPO_ROOT / report.PAGE if complete and args.out is None and not args.attach else None,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
