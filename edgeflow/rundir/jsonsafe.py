"""One rule for numbers JSON cannot hold, used by every file of the run directory.

JSON has no NaN or infinity, yet a NaN loss is exactly what a reader must see (it is an alert), so a
non-finite float is written as the string "nan", "inf" or "-inf" -- never null, which would read as
"not measured". `as_float` reads both back. Strings are made valid UTF-8 (a lone surrogate in a
name would otherwise break every reader downstream).
"""

from __future__ import annotations

import json
import math
from typing import Any


def json_safe(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return str(value)  # 'nan', 'inf', '-inf'
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, dict):
        return {clean_text(str(k)): json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_safe(v) for v in value]
    if hasattr(value, "item") and callable(value.item):  # NumPy scalars
        return json_safe(value.item())
    return value


def clean_text(text: str) -> str:
    """`text` with anything that is not encodable as UTF-8 (lone surrogates) replaced by U+FFFD."""
    try:
        text.encode("utf-8")
        return text
    except UnicodeEncodeError:
        return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def to_json(obj: Any, **kwargs: Any) -> str:
    return json.dumps(json_safe(obj), allow_nan=False, ensure_ascii=False, **kwargs)


def as_float(value: Any) -> float | None:
    """A numeric field as float: numbers as they are, "nan"/"inf"/"-inf" strings back to floats. Never
    raises: an integer too large for a float is +-inf (as JSON's 1e400 reads), anything else None."""
    if value is None or isinstance(value, bool):
        return None
    if isinstance(value, int):
        try:
            return float(value)
        except OverflowError:
            return math.inf if value > 0 else -math.inf
    if isinstance(value, float):
        return value
    if isinstance(value, str):
        if len(value) > 64:  # no number people write is longer; int("9" * 10**6) would be slow
            return None
        try:
            return float(value)
        except ValueError:
            return None
    return None
