"""The errors every room shares.

:class:`Rejected` is a request refused for a reason the caller can fix (the API, the
submission and upload code and the command line raise it).

:class:`ServiceError` and its kinds are what a service handler (or the GPU code it
calls) raises, typed by whether retrying could help. The worker retries a node (with
backoff, up to its ``maxAttempts``) only when the handler raised a :class:`ServiceError`
whose ``retryable`` is true; any other exception from a handler is a bug and fails the
node. ``code`` is machine-readable (``"out_of_memory"``, ``"bad_input"``...) and is
stored in the node's ``error.code``.
"""

from __future__ import annotations

from collections.abc import Mapping
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


class ServiceError(Exception):
    """A service failed. ``retryable`` says whether running it again could succeed."""

    default_code = "service_error"
    default_retryable = False

    def __init__(
        self,
        code: str | None = None,
        message: str | None = None,
        *,
        retryable: bool | None = None,
        details: Mapping[str, Any] | None = None,
    ) -> None:
        self.code: str = code or self.default_code
        self.message: str = message or self.code
        self.retryable: bool = self.default_retryable if retryable is None else retryable
        self.details: dict[str, Any] = dict(details or {})
        super().__init__(self.message)

    def to_json(self) -> dict[str, Any]:
        """Return the node ``error`` object of the graph schema: message, code, details."""
        return {"message": self.message, "code": self.code, "details": dict(self.details)}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(code={self.code!r}, message={self.message!r})"


class TransientError(ServiceError):
    """A failure that may pass on its own (timeout, connection reset): retry."""

    default_code = "transient"
    default_retryable = True


class PermanentError(ServiceError):
    """A failure that will happen again with the same input: fail the node now."""

    default_code = "permanent"
    default_retryable = False


class Cancelled(Exception):
    """Raised inside a handler when it notices that its job was cancelled."""
