"""Why an event became a dead letter, as a code from a small fixed vocabulary.

The router stores the code in the dead letter's `reason_code` column beside the human text
(`reason`); its metrics count dead letters by code (`questlog_router_dead_letters_total{reason_code}`),
`questlog status` groups the last hour's dead letters by code, and `questlog replay --code` picks
the dead letters of one or more codes. A new code is added here, and only here.
"""

from __future__ import annotations

import re

# code -> what it means, for people. The vocabulary is closed: every dead letter has one of these.
REASON_CODES: dict[str, str] = {
    "not_json": "the payload is not valid JSON",
    "bad_record": "a record holding an empty array, or more events than a record may hold",
    "not_object": "the event is not a JSON object",
    "unknown_type": "its event_type is not in the catalog",
    "bad_event_id": "its event_id breaks the rule (characters, length, Unicode)",
    "missing_field": "a required field is missing",
    "null_field": "a required field is null",
    "unknown_field": "a field the type's schema does not have",
    "wrong_type": "a field's value is not of the field's type",
    "too_large": "its typed copy would be over Kafka's record limit",
    "kafka_refused": "Kafka refused the typed copy",
    "other": "none of the above",
}

# The validator's and the router's texts, to their code (the first problem of a reason decides;
# the first pattern that matches wins). Used where a reason is made from validation's list of
# problems, and for dead letters written before the column existed.
_PATTERNS: tuple[tuple[str, re.Pattern], ...] = tuple(
    (code, re.compile(pattern))
    for code, pattern in (
        ("not_json", r"^payload is not valid JSON"),
        ("bad_record", r"^an empty array: no event|^\d+ events in one record"),
        ("not_object", r"^event must be a JSON object"),
        ("unknown_type", r"^unknown event_type"),
        ("bad_event_id", r"^field 'event_id'"),
        ("missing_field", r"required, missing"),
        ("null_field", r"required, got null"),
        ("unknown_field", r"not in the '[^']*' schema"),
        ("wrong_type", r"^field '[^']*': expected"),
        ("too_large", r"^the typed copy is \d+ bytes"),
        ("kafka_refused", r"Kafka refused the record"),
    )
)


def reason_code(reason: str | None) -> str:
    """The code of a dead letter's reason text ("wrong_type", "missing_field", ...; "other")."""
    first = (reason or "").split("; ", 1)[0]
    for code, pattern in _PATTERNS:
        if pattern.search(first):
            return code
    return "other"


def check_codes(codes: list[str] | tuple[str, ...]) -> list[str]:
    """``codes`` if each is in the vocabulary; a ValueError naming the first that is not."""
    for code in codes:
        if code not in REASON_CODES:
            raise ValueError(f"unknown reason code {code!r}; the codes are: {', '.join(REASON_CODES)}")
    return list(codes)
