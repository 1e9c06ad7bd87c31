"""Dead letters' reasons in a small fixed vocabulary: the router labels its metrics with it, and
`questlog status` and `questlog replay` group and filter dead letters by it.
"""

from __future__ import annotations

import re

# Dead-letter reasons in classes (the first problem of a reason decides): a bounded set of labels
# for Prometheus and a short list for people. Order matters: the first pattern that matches wins.
REASON_CLASSES: tuple[tuple[str, re.Pattern], ...] = tuple(
    (name, re.compile(pattern))
    for name, pattern in (
        ("not JSON", r"^payload is not valid JSON"),
        ("not an object", r"^event must be a JSON object"),
        ("unknown event_type", r"^unknown event_type"),
        ("bad event_id", r"^field 'event_id'"),
        ("missing field", r"required, missing"),
        ("null in required field", r"required, got null"),
        ("unknown field", r"not in the '[^']*' schema"),
        ("wrong type", r"^field '[^']*': expected"),
        ("too large", r"^the typed copy is \d+ bytes"),
        ("refused by Kafka", r"Kafka refused the record"),
    )
)


def reason_class(reason: str | None) -> str:
    """The class of a dead letter's reason ("wrong type", "missing field", ...; "other")."""
    first = (reason or "").split("; ", 1)[0]
    for name, pattern in REASON_CLASSES:
        if pattern.search(first):
            return name
    return "other"
