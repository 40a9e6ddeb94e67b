"""Values PostgreSQL's ``jsonb`` cannot hold, refused before anything is stored."""

from __future__ import annotations

import math
from typing import Any

from myspinbot.errors import Rejected

# JSON nested deeper than this is refused before anything walks it recursively (the
# graph schema, artifact references, PostgreSQL's jsonb parser all recurse).
MAX_JSON_DEPTH = 32


def check_storable(value: Any, where: str) -> None:
    """422 when ``value`` cannot be stored as ``jsonb``: nesting deeper than
    :data:`MAX_JSON_DEPTH`, a string (key or value) with a NUL character or a lone
    UTF-16 surrogate, or a number too big for a float (``1e400`` reads as infinity),
    all of which PostgreSQL refuses. Walks iteratively."""
    stack: list[tuple[Any, str, int]] = [(value, where, 1)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, dict | list) and depth > MAX_JSON_DEPTH:
            raise Rejected(
                422, "too_deep", f"{path}: JSON nested deeper than {MAX_JSON_DEPTH} levels"
            )
        if isinstance(item, dict):
            for key, child in item.items():
                _check_scalar(key, f"{path}.<key>")
                stack.append((child, f"{path}.{key}", depth + 1))
        elif isinstance(item, list):
            stack.extend((child, f"{path}[{i}]", depth + 1) for i, child in enumerate(item))
        else:
            _check_scalar(item, path)


def _check_scalar(value: Any, path: str) -> None:
    if isinstance(value, float) and not math.isfinite(value):
        raise Rejected(422, "invalid_number", f"{path}: number out of range")
    if not isinstance(value, str):
        return
    if "\x00" in value:
        raise Rejected(422, "invalid_text", f"{path}: text must not contain NUL characters")
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise Rejected(
            422, "invalid_text", f"{path}: text must be valid Unicode (no lone surrogates)"
        ) from None
