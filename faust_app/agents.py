"""The router's agent: every raw record of ``events``, routed to its typed topic or the dead letters.

A few lines by design: ``Router.handle`` (faust_app.router) routes and delivers, and returns only
once Kafka confirmed every copy; the events are acked after that, in offset order."""

from __future__ import annotations

import mode

from faust_app.router import Router
from faust_app.routing import Source
from faust_app.topics import Topics

# A batch: up to this many raw records, or what arrived within TAKE_WITHIN_S. Large enough to
# amortise each round trip to Kafka, small enough for a rebalance (it waits for the batch's acks).
TAKE_MAX = 1000
TAKE_WITHIN_S = 0.05


def add_route_agent(
    app, topics: Topics, make_router, take_max: int = TAKE_MAX, take_within_s: float = TAKE_WITHIN_S
) -> None:
    """Register agent ``route`` on ``app``: ``make_router()`` builds its Router once Faust's producer
    runs. One actor (``concurrency=1``: acks in offset order); a failure crashes the worker instead
    of restarting the actor without its unacked events (faust-streaming#527), and the runner (or
    the operator) starts it again from the last commit."""

    @app.agent(topics.raw, name="route", concurrency=1, supervisor_strategy=mode.CrashingSupervisor)
    async def route(stream):
        router: Router = make_router()
        await router.prepare()
        async for events in stream.noack_take(take_max, within=take_within_s):
            router.observe_lag(events)
            await router.handle((m.value, Source(m.topic, m.partition, m.offset)) for m in (e.message for e in events))
            for event in events:
                event.ack()
