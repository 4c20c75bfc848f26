"""Reading one JSON Lines row with a problem message fit to report by line number."""

from __future__ import annotations

import json
from typing import Any


def json_type_name(value: Any) -> str:
    """A decoded value's type for a message: object, array, boolean, null, else the Python name (int, str...)."""
    if value is None:
        return "null"
    return {dict: "object", list: "array", bool: "boolean"}.get(type(value), type(value).__name__)


def parse_object_line(line: str) -> tuple[dict[str, Any] | None, str | None]:
    """(the JSON object on `line`, None), or (None, why it is not one)."""
    try:
        value = json.loads(line)
    except json.JSONDecodeError as e:
        return None, f"invalid JSON ({e.msg} at column {e.colno})"
    if not isinstance(value, dict):
        return None, f"expected a JSON object, got {json_type_name(value)}"
    return value, None
