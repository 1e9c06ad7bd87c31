"""`questlog top`: a live view of the pipeline, refreshed every few seconds until Ctrl-C.

It scrapes the three stages' GET /metrics (collector, router, sink), keeps the last minutes of
samples, and shows per stage the events per second now, a sparkline of the rate over the window
and the total; the router's and the sink's lag; each table's freshness; the dead letters by reason
class. `Top.sample` takes one round of scrapes, `Top.render` draws a frame from what it kept:
the test renders frames to a captured console from canned scrapes.
"""

from __future__ import annotations

import time
import urllib.request
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field

from questlog.settings import Settings

SPARK_CHARS = "▁▂▃▄▅▆▇█"
# Series of the stages, as their /metrics name them (producer/metrics.py, faust_app/router.py,
# spark_sink/metrics.py); prometheus_client's parser drops the `_total` of counters.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("collector", "collector", "questlog_events_accepted"),
    ("router", "router", "questlog_router_events_routed"),
    ("dead letters", "router", "questlog_router_dead_letters"),
    ("sink", "sink", "questlog_sink_rows_written"),
)

Samples = dict[str, dict[tuple[tuple[str, str], ...], float]]  # metric -> labels -> value


def sparkline(values: list[float], width: int) -> str:
    """The last ``width`` values as block characters, scaled to the largest of them."""
    values = values[-width:]
    top = max(values, default=0.0)
    if top <= 0:
        return SPARK_CHARS[0] * len(values)
    return "".join(SPARK_CHARS[min(len(SPARK_CHARS) - 1, int(v / top * (len(SPARK_CHARS) - 1) + 0.5))] for v in values)


def parse(text: str) -> Samples:
    """A /metrics page as {metric family: {labels: value}} (counters without `_total`)."""
    from prometheus_client.parser import text_string_to_metric_families

    out: Samples = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name.endswith("_created"):
                continue
            name = sample.name[: -len("_total")] if sample.name.endswith("_total") else sample.name
            out.setdefault(name, {})[tuple(sorted(sample.labels.items()))] = sample.value
    return out


def scrape_http(url: str, timeout: float = 1.5) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as response:
        return response.read().decode()


def total(samples: Samples, metric: str) -> float | None:
    series = samples.get(metric)
    return None if series is None else sum(series.values())


def by_label(samples: Samples, metric: str, label: str) -> dict[str, float]:
    out: dict[str, float] = {}
    for labels, value in samples.get(metric, {}).items():
        key = dict(labels).get(label, "")
        out[key] = out.get(key, 0.0) + value
    return out


@dataclass
class Top:
    """What `questlog top` keeps: the latest scrape of each stage and each stage's rate history."""

    urls: dict[str, str]  # stage -> its /metrics URL
    window_s: float = 300.0
    interval_s: float = 2.0
    scrape: Callable[[str], str] = scrape_http
    clock: Callable[[], float] = time.monotonic
    latest: dict[str, Samples] = field(default_factory=dict)
    errors: dict[str, str] = field(default_factory=dict)
    rates: dict[str, deque] = field(default_factory=dict)
    _last: dict[str, tuple[float, float]] = field(default_factory=dict)  # stage row -> (time, counter)

    @classmethod
    def for_settings(cls, settings: Settings, **kwargs) -> Top:
        return cls(
            {
                "collector": f"{settings.collector_url}/metrics",
                "router": settings.router_metrics_url,
                "sink": settings.sink_metrics_url,
            },
            **kwargs,
        )

    def sample(self) -> None:
        """Scrape every stage once and extend the rate histories."""
        now = self.clock()
        for stage, url in self.urls.items():
            try:
                self.latest[stage] = parse(self.scrape(url))
                self.errors.pop(stage, None)
            except Exception as exc:  # a stage away is shown as such; the others go on
                self.latest.pop(stage, None)
                self.errors[stage] = f"{type(exc).__name__}: {exc}"[:120]
        points = max(2, int(self.window_s / self.interval_s))
        for row, stage, metric in STAGES:
            value = total(self.latest.get(stage, {}), metric) if stage in self.latest else None
            history = self.rates.setdefault(row, deque(maxlen=points))
            if value is None:
                self._last.pop(row, None)
                continue
            last = self._last.get(row)
            if last is not None and now > last[0]:
                history.append(max(0.0, value - last[1]) / (now - last[0]))  # a restart's reset counts as 0
            self._last[row] = (now, value)

    def render(self, width: int = 40):
        """One frame: a rich Group of the rates, the lags, freshness and dead letters."""
        from rich.console import Group
        from rich.table import Table

        from ops.status import duration

        rates = Table(
            title=f"Questlog top: events/s, last {self.window_s / 60:.0f} min (Ctrl-C to leave)", title_justify="left"
        )
        for name, right in (("stage", False), ("now/s", True), ("history", False), ("total", True)):
            rates.add_column(name, justify="right" if right else "left", no_wrap=True)
        for row, stage, metric in STAGES:
            history = list(self.rates.get(row, ()))
            if stage in self.errors:
                rates.add_row(row, "-", f"[red]{stage} not answering[/]", "-")
                continue
            value = total(self.latest.get(stage, {}), metric)
            rates.add_row(
                row,
                f"{history[-1]:,.1f}" if history else "-",
                sparkline(history, width),
                "-" if value is None else f"{value:,.0f}",
            )

        state = Table(show_header=True, title_justify="left")
        for name in ("", "figure"):
            state.add_column(name)
        router, sink = self.latest.get("router", {}), self.latest.get("sink", {})
        if "router" in self.latest:
            records = total(router, "questlog_router_lag_records")
            seconds = total(router, "questlog_router_lag_seconds")
            state.add_row("router lag", f"{records or 0:,.0f} records, oldest {duration(seconds or 0)}")
        else:
            state.add_row("router lag", "unknown (router not answering)")
        if "sink" in self.latest:
            lag = by_label(sink, "questlog_sink_lag_records", "topic")
            state.add_row(
                "sink lag",
                f"{sum(lag.values()):,.0f} records"
                + (
                    " (" + ", ".join(f"{t} {v:,.0f}" for t, v in sorted(lag.items()) if v) + ")"
                    if any(lag.values())
                    else ""
                ),
            )
            rate_in = total(sink, "questlog_sink_input_rows_per_second")
            rate_done = total(sink, "questlog_sink_processed_rows_per_second")
            state.add_row("sink input vs processing", f"{rate_in or 0:,.1f}/s in, {rate_done or 0:,.1f}/s processed")
            for table, age in sorted(by_label(sink, "questlog_sink_freshness_seconds", "table").items()):
                state.add_row(f"freshness {table}", f"last rows {duration(age)} ago")
        else:
            state.add_row("sink lag", "unknown (sink not answering)")
        dead = by_label(router, "questlog_router_dead_letters", "reason_code")
        for reason, n in sorted(dead.items(), key=lambda kv: -kv[1]):
            state.add_row(f"dead letters: {reason}", f"{n:,.0f} since the router started")
        if "router" in self.latest and not dead:
            state.add_row("dead letters", "none since the router started")
        for stage, why in sorted(self.errors.items()):
            state.add_row(f"[red]{stage}[/]", why)
        return Group(rates, state)


def run(settings: Settings, interval_s: float = 2.0, window_s: float = 300.0) -> None:
    """Refresh the view every ``interval_s`` until Ctrl-C."""
    from rich.live import Live

    top = Top.for_settings(settings, interval_s=interval_s, window_s=window_s)
    top.sample()
    try:
        with Live(top.render(), refresh_per_second=4, screen=False) as live:
            while True:
                time.sleep(interval_s)
                top.sample()
                live.update(top.render())
    except KeyboardInterrupt:
        pass
