"""The one error type for a refused request, shared by the API, the submission and upload
code and the command line."""

from __future__ import annotations

from typing import Any


class Rejected(Exception):
    """A request refused for a reason the caller can fix or wait out.

    ``status`` is the HTTP status an API answers with, ``code`` a machine-readable reason,
    ``details`` extra JSON and ``headers`` response headers (e.g. ``Retry-After``).
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: Any = None,
        headers: dict[str, str] | None = None,
    ) -> None:
        super().__init__(message)
        self.status, self.code, self.message = status, code, message
        self.details = details if details is not None else {}
        self.headers = headers or {}
