"""A do-nothing Faust agent: every message of the raw topic forwarded, bytes as they are, to one
output topic, the way a Faust tutorial writes it: ``async for`` over the stream, ``await
topic.send`` per message, and Faust's default acking (an event is acked when the agent asks for
the next one) and settings. It parses and validates nothing: the cost of Faust's per-message path,
beside which the router's own figure is read.

Run: BENCH_KAFKA=127.0.0.1:29092 BENCH_TOPIC=RAW BENCH_OUT=OUT BENCH_GROUP=G BENCH_WEB_PORT=P \
       faust -A benchmarks.baselines.faust_noop worker -l info
"""

from __future__ import annotations

import os
import tempfile

import faust

from benchmarks.kafka_util import python_client_auth
from faust_app.topics import RAW_BYTES as RAW  # bytes in, bytes out

_auth = python_client_auth()

app = faust.App(
    os.environ.get("BENCH_GROUP", "bench-faust-noop"),
    broker=f"kafka://{os.environ.get('BENCH_KAFKA', '127.0.0.1:9092')}",
    broker_credentials=(  # SASL: as the bench's admin
        faust.SASLCredentials(
            username=_auth["sasl_plain_username"],
            password=_auth["sasl_plain_password"],
            mechanism=_auth["sasl_mechanism"],
        )
        if _auth
        else None
    ),
    web_host="127.0.0.1",
    web_bind="127.0.0.1",
    web_port=int(os.environ.get("BENCH_WEB_PORT", "6099")),
    datadir=os.environ.get("BENCH_DATADIR") or tempfile.mkdtemp(prefix="faust-noop-"),
    store="memory://",
)
raw = app.topic(os.environ.get("BENCH_TOPIC", "events"), **RAW)
out = app.topic(os.environ.get("BENCH_OUT", "events.out"), **RAW)


@app.agent(raw)
async def forward(stream):
    async for event in stream.events():
        await out.send(key=event.key, value=event.value)
