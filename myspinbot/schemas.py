"""The JSON Schemas in ``schemas/`` (graph, capability, job event, artifact...), loaded once.

These are the contracts every room shares, so they load from the shared ground: the
capability registry checks declarations against ``capability``, the graph validation
checks documents against ``graph``, the engine's events match ``job-event``.
"""

from __future__ import annotations

import functools
import json
from pathlib import Path
from typing import Any

from jsonschema import Draft202012Validator, FormatChecker

SCHEMA_DIR = Path(__file__).resolve().parents[1] / "schemas"


@functools.cache
def load_schema(name: str) -> dict[str, Any]:
    """Return the parsed ``schemas/<name>.schema.json`` (e.g. ``load_schema("graph")``).

    The result is cached and shared between callers: treat it as read-only.
    Raises ``FileNotFoundError`` for an unknown name.
    """
    path = SCHEMA_DIR / f"{name}.schema.json"
    with path.open(encoding="utf-8") as handle:
        schema: dict[str, Any] = json.load(handle)
    return schema


@functools.cache
def schema_validator(name: str) -> Draft202012Validator:
    """Return a cached draft 2020-12 validator for ``schemas/<name>.schema.json``.

    Format keywords (``uuid``, ``date-time``, ...) are asserted where a checker for them
    is available.
    """
    return Draft202012Validator(load_schema(name), format_checker=FormatChecker())
