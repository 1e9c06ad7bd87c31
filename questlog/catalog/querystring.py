"""The collector's seed-style GET routes: query-string text -> the field's type."""

from __future__ import annotations

from typing import Any

from questlog.catalog.model import Field


def coerce_text(f: Field, text: str) -> Any:
    """Convert a query-string value to the field's type; leave it as text if it does not parse,
    so that validation reports it instead of the value being silently changed or dropped."""
    try:
        if f.type == "long":
            return int(text)
        if f.type == "double":
            return float(text)
    except ValueError:
        return text
    if f.type == "boolean" and text.lower() in ("true", "false"):
        return text.lower() == "true"
    return text
