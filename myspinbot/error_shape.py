"""The API's one error shape, ``{"error": {"code", "message", "details"}}``, as the
schema every router declares for its error responses."""

from __future__ import annotations

from typing import Any

from ninja import Schema


class ErrorBody(Schema):
    code: str
    message: str
    details: dict[str, Any] | list[Any] = {}


class ErrorOut(Schema):
    error: ErrorBody
