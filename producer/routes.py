"""HTTP routes: the seed's GET routes (from the catalog), POST /events, /healthz."""

from __future__ import annotations

import json
import logging
import time
from collections import Counter
from typing import Any

from flask import Blueprint, current_app, jsonify, request
from werkzeug.exceptions import HTTPException, NotFound, RequestEntityTooLarge

from producer.envelope import RejectedEvent, build_envelope, client_context, utc_now
from producer.kafka import DeliveryError, EventTooLarge
from producer.kafka_writer import get_writer
from producer.metrics import ACCEPTED, PRODUCE_SECONDS, REJECTED, render
from questlog.catalog import Catalog, coerce_text

log = logging.getLogger(__name__)
bp = Blueprint("collector", __name__)


def get_catalog() -> Catalog:
    catalog = current_app.config["CATALOG"]
    return catalog if isinstance(catalog, Catalog) else catalog.get()


def _error(status: int, reason: str, **extra: Any):
    REJECTED.labels(str(status)).inc()
    return jsonify(error=reason, **extra), status


def _deliver(events: list[dict[str, Any]]):
    started = time.perf_counter()
    try:
        get_writer().send(events)
    except EventTooLarge as exc:
        return _error(413, f"an event is larger than a Kafka message may be: {exc}")
    except DeliveryError as exc:
        log.error("Kafka did not take %d events: %s", len(events), exc)
        return _error(503, f"events not stored, retry with the same event_ids: {exc}",
                      event_ids=[e["event_id"] for e in events])
    PRODUCE_SECONDS.observe(time.perf_counter() - started)
    for event_type, n in Counter(e["event_type"] for e in events).items():
        ACCEPTED.labels(event_type).inc(n)
    return None


@bp.get("/", defaults={"path": ""})
@bp.get("/<path:path>")
def seed_route(path: str):
    """The catalog's GET routes (`/purchase_a_sword`, `/join_guild`, ...), looked up per request
    so that a newly deployed type's route works without a restart; query parameters are fields."""
    catalog = get_catalog()
    et = catalog.routes.get("/" + path)
    if et is None:
        raise NotFound()
    params: dict[str, Any] = {}
    for key, text in request.args.items():
        f = et.field(key)
        params[key] = coerce_text(f, text) if f is not None else text
    try:
        event = build_envelope(params, catalog, client_context(request.headers), utc_now(), et.name)
    except RejectedEvent as exc:
        return _error(400, str(exc))
    failure = _deliver([event])
    if failure:
        return failure
    return et.response, 200, {"Content-Type": "text/plain; charset=utf-8"}


def _has_unpaired_surrogate(body: Any) -> bool:
    try:
        json.dumps(body, ensure_ascii=False).encode()
    except UnicodeEncodeError:
        return True
    return False


@bp.post("/events")
def post_events():
    """One JSON event, or a JSON array of them. 202 once Kafka has all; 4xx with reasons if any
    cannot be an event (then none is sent)."""
    settings = current_app.config["SETTINGS"]
    catalog = get_catalog()
    data = request.get_data(cache=False) or b""
    try:
        body = json.loads(data)
    except RequestEntityTooLarge:
        raise
    except (ValueError, UnicodeDecodeError, RecursionError) as exc:
        return _error(400, f"body is not valid JSON: {exc}")
    if b"\\u" in data and _has_unpaired_surrogate(body):
        return _error(400, "body is not valid Unicode: it escapes an unpaired surrogate (\\ud800-\\udfff)")
    items = body if isinstance(body, list) else [body]
    if not items:
        return _error(400, "empty array: nothing to record")
    if len(items) > settings.max_batch_events:
        return _error(413, f"{len(items)} events in one request; at most {settings.max_batch_events}")
    context, now = client_context(request.headers), utc_now()
    events, errors = [], []
    for index, item in enumerate(items):
        try:
            events.append(build_envelope(item, catalog, context, now))
        except RejectedEvent as exc:
            errors.append({"index": index, "error": str(exc)})
    if errors:
        reason = errors[0]["error"] if len(items) == 1 else f"{len(errors)} of {len(items)} events rejected"
        return _error(400, reason, rejected=errors)
    failure = _deliver(events)
    if failure:
        return failure
    return jsonify(accepted=len(events), event_ids=[e["event_id"] for e in events]), 202


@bp.get("/metrics")
def metrics():
    body, content_type = render()
    return body, 200, {"Content-Type": content_type}


@bp.get("/healthz")
def healthz():
    if get_writer().ping():
        return jsonify(status="ok")
    return _error(503, "Kafka is not reachable")


@bp.app_errorhandler(HTTPException)
def _http_error(exc: HTTPException):
    reasons = {413: f"body larger than {current_app.config['MAX_CONTENT_LENGTH']} bytes"}
    return _error(exc.code or 500, reasons.get(exc.code, exc.description))
