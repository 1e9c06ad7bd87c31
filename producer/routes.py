"""HTTP routes: the seed's GET routes (from the catalog), POST /events, /healthz, /metrics.

Every route that records events does the same, in this order, and sends nothing unless every
step passed: the write key (401), Kafka known to be away (503 at once), the input (400/413/431),
every event enveloped, serialised and size-checked, then all of them produced and confirmed
(2xx) or a 503 naming every event_id.
"""

from __future__ import annotations

import logging
import math
import time
from collections import Counter
from typing import Any

from flask import Blueprint, Response, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound

from producer.auth import bearer_token
from producer.envelope import (
    DEFAULT_SOURCE,
    MAX_AMPLIFICATION,
    MAX_HEADER_CHARS,
    EventTooLarge,
    RejectedEvent,
    TooAmplified,
    build_envelope,
    environ_context,
    new_event_ids,
    oversized_header,
    parse_body,
    request_bytes,
    to_records,
    utc_now,
)
from producer.extension import get_writer
from producer.metrics import ACCEPTED, PRODUCE_SECONDS, REJECTED, render
from producer.writer import RETRY_AFTER_S, DeliveryError, KafkaUnavailable
from questlog.catalog import Catalog, coerce_text, short_name

log = logging.getLogger(__name__)
bp = Blueprint("collector", __name__)


def get_catalog() -> Catalog:
    catalog = current_app.config["CATALOG"]
    return catalog if isinstance(catalog, Catalog) else catalog.get()


def _error(status: int, reason: str, headers: dict[str, str] | None = None, **extra: Any):
    REJECTED.labels(str(status)).inc()
    return jsonify(error=reason, **extra), status, headers or {}


def _unavailable(reason: str, **extra: Any):
    return _error(503, reason, {"Retry-After": str(RETRY_AFTER_S)}, **extra)


class _Refused(Exception):
    """Answer the request with this response; nothing was sent."""

    def __init__(self, response) -> None:
        self.response = response


def _source(query_key: bool) -> str:
    """The source the request speaks for; refuses it (401) if keys are on and its key is wrong."""
    keys = current_app.config["WRITE_KEYS"]
    if keys is None:
        return DEFAULT_SOURCE
    key = bearer_token(request.headers.get("Authorization"))
    if key is None and query_key:
        key = request.args.get("key")
    source = keys.source_for(key)
    if source is None:
        reason = (
            "a write key is required: send `Authorization: Bearer <key>`" + (" or `?key=<key>`" if query_key else "")
            if key is None
            else "unknown write key"
        )
        raise _Refused(_error(401, reason, {"WWW-Authenticate": 'Bearer realm="questlog"'}))
    return source


def _writer():
    """This worker's writer, if Kafka is not known to be away (else a 503 at once)."""
    writer = get_writer()
    if not writer.available:
        raise _Refused(_unavailable("Kafka is not reachable; nothing was sent, retry shortly"))
    return writer


def _context() -> dict[str, str | None]:
    context = environ_context(request.environ)
    header = oversized_header(context)
    if header is not None:
        raise _Refused(_error(431, f"header {header} is longer than {MAX_HEADER_CHARS} characters"))
    return context


def _deliver(writer, events: list[dict[str, Any]], records: list[tuple[bytes, bytes]]):
    """Produce the records; None once Kafka has all, else the 503 to answer."""
    started = time.perf_counter()
    try:
        writer.send(records)
    except KafkaUnavailable as exc:
        return _unavailable(f"nothing was sent, retry shortly: {exc}", event_ids=[e["event_id"] for e in events])
    except DeliveryError as exc:
        log.error("Kafka did not confirm %d events: %s", len(events), exc)
        return _unavailable(
            f"not every event was stored; retry with the same event_ids: {exc}",
            event_ids=[e["event_id"] for e in events],
        )
    PRODUCE_SECONDS.observe(time.perf_counter() - started)
    if len(events) == 1:
        ACCEPTED.labels(events[0]["event_type"]).inc()
    else:
        for event_type, n in Counter(e["event_type"] for e in events).items():
            ACCEPTED.labels(event_type).inc(n)
    return None


def _records(events: list[dict[str, Any]], body_bytes: int, dumps=None) -> list[tuple[bytes, bytes]]:
    """The request's records; refused (413) when they would be more than MAX_AMPLIFICATION times
    the request's own size (long headers copied into each of many small events)."""
    limit = current_app.config["SETTINGS"].max_body_bytes
    try:
        records = to_records(events, limit, dumps) if dumps else to_records(events, limit)
        stored = sum(len(k) + len(v) for k, v in records)
        size = request_bytes(request.environ, body_bytes)
        if stored > MAX_AMPLIFICATION * size:
            raise TooAmplified(stored, size)
        return records
    except TooAmplified as exc:
        raise _Refused(_error(413, f"{exc}; nothing was sent")) from None
    except EventTooLarge as exc:
        raise _Refused(
            _error(413, f"{exc}; nothing was sent", rejected=[{"index": exc.index, "error": str(exc)}])
        ) from None
    except RejectedEvent as exc:
        raise _Refused(_error(400, f"{exc}; nothing was sent")) from None


@bp.errorhandler(_Refused)
def _refused(exc: _Refused):
    return exc.response


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def seed_route(path: str):
    """The catalog's GET routes (`/purchase_a_sword`, `/join_guild`, ...), looked up per request
    so that a newly deployed type's route works without a restart; query parameters are fields
    (but `key`, the write key). HEAD (which Flask answers with the GET route) records nothing: 405."""
    catalog = get_catalog()
    et = catalog.routes.get("/" + path)
    if et is None:
        raise NotFound()
    if request.method == "HEAD":  # a link checker or a prefetch is not a player's action
        return _error(405, "HEAD records nothing; send GET to record an event", {"Allow": "GET"})
    source = _source(query_key=True)
    writer = _writer()
    params: dict[str, Any] = {}
    for name, text in request.args.items():
        if name == "key":
            continue
        f = et.field(name)
        value = coerce_text(f, text) if f is not None else text
        if type(value) is float and not math.isfinite(value):  # `price=nan`: kept as sent, for the router to report
            value = text
        params[name] = value
    try:
        event = build_envelope(params, catalog, _context(), utc_now(), et.name, source=source)
    except RejectedEvent as exc:
        return _error(400, str(exc))
    failure = _deliver(writer, [event], _records([event], 0))
    if failure:
        return failure
    return Response(et.response, 200, content_type="text/plain; charset=utf-8")


@bp.post("/events")
def post_events():
    """One JSON event, or a JSON array of them. 202 once Kafka has all; 4xx with reasons if any
    cannot be an event (then none is sent)."""
    settings = current_app.config["SETTINGS"]
    if request.mimetype != "application/json":  # a cross-site form can post text/plain, never this
        return _error(415, f"Content-Type must be application/json, got {short_name(request.mimetype or '(none)')}")
    source = _source(query_key=False)
    writer = _writer()
    catalog = get_catalog()
    data = request.get_data(cache=False) or b""
    try:
        body, dumps = parse_body(data)
    except ValueError as exc:
        return _error(400, str(exc))
    items = body if isinstance(body, list) else [body]
    if not items:
        return _error(400, "empty array: nothing to record")
    if len(items) > settings.max_batch_events:
        return _error(413, f"{len(items)} events in one request; at most {settings.max_batch_events}")
    context, now = _context(), utc_now()
    ids = new_event_ids(len(items))
    events, errors = [], []
    for index, item in enumerate(items):
        try:
            events.append(build_envelope(item, catalog, context, now, source=source, new_id=ids[index]))
        except RejectedEvent as exc:
            errors.append({"index": index, "error": str(exc)})
    if errors:
        reason = errors[0]["error"] if len(items) == 1 else f"{len(errors)} of {len(items)} events rejected"
        return _error(400, f"{reason}; nothing was sent", rejected=errors)
    failure = _deliver(writer, events, _records(events, len(data), dumps))
    if failure:
        return failure
    return jsonify(accepted=len(events), event_ids=[e["event_id"] for e in events]), 202


@bp.get("/metrics")
def metrics():
    body, content_type = render()
    return body, 200, {"Content-Type": content_type}


@bp.get("/healthz")
def healthz():
    """200 while this worker's producer is connected to Kafka; answered from the producer's state,
    so it is as fast with Kafka away."""
    writer = get_writer()
    if writer.state == "up":
        return jsonify(status="ok")
    return _unavailable(f"Kafka is not reachable ({writer.state})", state=writer.state)


@bp.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    code = exc.code or 500
    reasons = {413: f"body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}
    return _error(code, reasons.get(code, exc.description or exc.name))
