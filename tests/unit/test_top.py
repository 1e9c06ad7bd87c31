"""`questlog top` renders frames from the stages' /metrics: rates and sparklines from counter
deltas, lag, freshness, dead letters by class, and a stage that does not answer."""

from __future__ import annotations

from rich.console import Console

from ops.top import Top, sparkline


def pages(accepted: float, routed: float, dead: float, rows: float) -> dict[str, str]:
    return {
        "http://c/metrics": f"""# TYPE questlog_events_accepted_total counter
questlog_events_accepted_total{{event_type="purchase_sword"}} {accepted}
""",
        "http://r/metrics": f"""# TYPE questlog_router_events_routed_total counter
questlog_router_events_routed_total{{event_type="purchase_sword"}} {routed}
# TYPE questlog_router_dead_letters_total counter
questlog_router_dead_letters_total{{reason_code="wrong_type"}} {dead}
# TYPE questlog_router_lag_records gauge
questlog_router_lag_records 1500
# TYPE questlog_router_lag_seconds gauge
questlog_router_lag_seconds 95
""",
        "http://s/metrics": f"""# TYPE questlog_sink_rows_written_total counter
questlog_sink_rows_written_total{{table="sword_purchases"}} {rows}
# TYPE questlog_sink_lag_records gauge
questlog_sink_lag_records{{topic="events.purchase_sword"}} 40
questlog_sink_lag_records{{topic="events.dlq"}} 0
# TYPE questlog_sink_freshness_seconds gauge
questlog_sink_freshness_seconds{{table="sword_purchases"}} 3.5
# TYPE questlog_sink_input_rows_per_second gauge
questlog_sink_input_rows_per_second 120.0
# TYPE questlog_sink_processed_rows_per_second gauge
questlog_sink_processed_rows_per_second 300.0
""",
    }


def frame(top: Top) -> str:
    console = Console(record=True, width=160)
    console.print(top.render(width=20))
    return console.export_text()


def test_a_frame_has_a_row_per_stage_with_its_rate_sparkline_and_total():
    now = [0.0]
    scraped = [pages(0, 0, 0, 0), pages(100, 90, 10, 80), pages(300, 280, 20, 200)]
    current = {}
    top = Top(
        {"collector": "http://c/metrics", "router": "http://r/metrics", "sink": "http://s/metrics"},
        scrape=lambda url: current[url],
        clock=lambda: now[0],
    )
    for t, page in zip((0.0, 2.0, 4.0), scraped, strict=True):
        now[0] = t
        current.update(page)
        top.sample()
    text = frame(top)
    lines = {line.split("│")[1].strip(): line for line in text.splitlines() if line.count("│") >= 4}
    assert "100.0" in lines["collector"] and "300" in lines["collector"]  # (300-100)/2 s, total 300
    assert "▅█" in lines["collector"]  # 50/s then 100/s
    assert "95.0" in lines["router"] and "280" in lines["router"]
    assert "5.0" in lines["dead letters"] and "20" in lines["dead letters"]
    assert "60.0" in lines["sink"] and "200" in lines["sink"]
    assert "1,500 records, oldest 1m35s" in text
    assert "40 records (events.purchase_sword 40)" in text
    assert "120.0/s in, 300.0/s processed" in text
    assert "freshness sword_purchases" in text and "last rows 3.5s ago" in text
    assert "dead letters: wrong_type" in text and "20 since the router started" in text


def test_a_stage_that_does_not_answer_is_shown_and_the_others_go_on():
    current = pages(5, 5, 0, 5)

    def scrape(url):
        if url == "http://s/metrics":
            raise ConnectionRefusedError("connection refused")
        return current[url]

    top = Top(
        {"collector": "http://c/metrics", "router": "http://r/metrics", "sink": "http://s/metrics"}, scrape=scrape
    )
    top.sample()
    text = frame(top)
    assert "sink not answering" in text
    assert "unknown (sink not answering)" in text
    assert "ConnectionRefusedError" in text
    assert "1,500 records" in text


def test_sparkline_scales_to_its_largest_value():
    assert sparkline([0, 1, 2, 4, 8], 10) == "▁▂▃▅█"
    assert sparkline([0, 0], 10) == "▁▁"
    assert sparkline([1, 2, 3, 4, 100], 3) == "▁▁█"
