"""What every case gets: the settings of the pipeline under test, the sizes, the memory sampler,
a directory of its own, and where to put its figures."""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from benchmarks.rss import RssSampler
from ops.stack.runner import Pipeline
from questlog.settings import Settings


@dataclass
class Size:
    """How much each case sends and how long it may take. ``full`` is `make bench`; ``tiny`` only
    proves that the harness runs (CI)."""

    name: str
    ab_seconds: float  # each ab run stops after this long...
    ab_requests: int  # ...or this many requests
    ab_rounds: int  # rounds alternating between the servers; the median round is reported
    post_requests: int  # POST /events batches of 100, per server
    router_events: int  # the backlog of single-event (GET) records each router measurement drains
    router_batch_events: int  # ...and of client batches (fewer records: it takes more events to time them)
    router_cap_s: float  # ...or what it drained by then
    router_variants: tuple[tuple[str, int], ...]  # (input, workers): benchmarks.cases.router's inputs
    router_partitions: int  # of each raw topic the router case drains
    sink_rows_per_table: int
    sink_cap_s: float
    sink_side_by_side: bool  # run the two sink jobs at once (tiny: halves the time; figures meaningless)
    e2e_rates: tuple[int, ...]  # events/s
    e2e_seconds: float
    e2e_drain_cap_s: float  # after the load stops, how long probes may still take to land
    settle_cap_s: float  # how long a backlog left in the pipeline may drain before it is skipped
    budget_s: float  # the whole run; a case that would not fit in what is left is skipped, and says so


SIZES = {
    "full": Size(
        "full",
        ab_seconds=5,
        ab_requests=50_000,
        ab_rounds=3,
        post_requests=50_000,
        router_events=100_000,
        router_batch_events=400_000,
        router_cap_s=30,
        router_variants=(
            ("client batches", 1),
            ("GET", 1),
            ("client batches, half invalid", 1),
            ("client batches", 2),
        ),
        router_partitions=4,
        sink_rows_per_table=100_000,
        sink_cap_s=75,
        sink_side_by_side=False,
        e2e_rates=(1000, 5000),
        e2e_seconds=60,
        e2e_drain_cap_s=20,
        settle_cap_s=10,
        # every case fits (a run of them all took 11.5 min with the 1-table sink and compaction
        # skipped, which take up to 3 and 5 min more)
        budget_s=24 * 60,
    ),
    "tiny": Size(
        "tiny",
        ab_seconds=1,
        ab_requests=100,
        ab_rounds=1,
        post_requests=20,
        router_events=300,
        router_batch_events=300,
        router_cap_s=20,
        router_variants=(("client batches, half invalid", 2),),
        router_partitions=4,
        sink_rows_per_table=100,
        sink_cap_s=120,
        sink_side_by_side=True,
        e2e_rates=(100,),
        e2e_seconds=4,
        e2e_drain_cap_s=20,
        settle_cap_s=10,
        budget_s=30 * 60,
    ),
}


@dataclass
class Row:
    """One line of the table: a measurement of Questlog's stage beside one baseline."""

    case: str
    measure: str
    ours: str
    baseline: str = ""
    ratio: str = ""


@dataclass
class Context:
    settings: Settings
    pipeline: Pipeline
    size: Size
    run: str  # a short id naming this run's topics, groups, schemas and directories
    home: Path  # scratch space for this run's extra processes
    rss: RssSampler
    rows: list[Row] = field(default_factory=list)
    data: dict[str, Any] = field(default_factory=dict)  # figures for the plots and latest.json
    notes: list[str] = field(default_factory=list)
    ports: set[int] = field(default_factory=set)
    deadline: float = float("inf")  # time.monotonic() by which the run must be done
    reserve_s: float = 0.0  # what the cases after the current one need of the budget

    def left_s(self) -> float:
        return self.deadline - time.monotonic()

    def fits(self, need_s: float) -> bool:
        """Whether an optional part that may take ``need_s`` leaves the later cases their time."""
        return self.left_s() - self.reserve_s >= need_s

    def say(self, message: str) -> None:
        print(f"bench [{time.strftime('%H:%M:%S')}]: {message}", file=sys.stderr, flush=True)

    def add(self, case: str, measure: str, ours: str, baseline: str = "", ratio: str = "") -> None:
        self.rows.append(Row(case, measure, ours, baseline, ratio))

    def figure(self, key: str, value: Any) -> None:
        self.data.setdefault(key, []).append(value)


def ratio(ours: float | None, base: float | None) -> str:
    if not ours or not base:
        return "n/a"
    return f"{ours / base:.2f}x"


def num(x: float | None, digits: int = 0) -> str:
    if x is None:
        return "n/a"
    return f"{x:,.{digits}f}"
