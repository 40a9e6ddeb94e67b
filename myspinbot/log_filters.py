"""Keep credentials out of log lines.

A WebSocket client that cannot set headers sends its API token as ``?token=``, and a
local-folder artifact link carries a signed token in its path (``/storage/<token>``).
The ASGI server logs every handshake and request line with its path and query, and
Django logs the path of refused requests, so :class:`RedactSecrets` rewrites those
records before any handler sees them. :func:`install` attaches it to the loggers that
print request lines.
"""

from __future__ import annotations

import logging
import re
from typing import Any

REDACTED = "[redacted]"

_PATTERNS = [
    # ?token=... / &access_token=... in a logged URL
    (re.compile(r"([?&](?:access_)?token=)[^&\s\"']*", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    # signed download links
    (re.compile(r"(/storage/)[^\s?\"']+"), rf"\g<1>{REDACTED}"),
    # an Authorization header value that made it into a message
    (re.compile(r"(Bearer\s+)[^\s\"',]+", re.IGNORECASE), rf"\g<1>{REDACTED}"),
    # django-ninja (DEBUG only) logs a whole Authorization header of another scheme
    (re.compile(r"(Unexpected auth - ')[^']*"), rf"\g<1>{REDACTED}"),
    # an API token wherever it appears (they all start with ApiToken.PREFIX)
    (re.compile(r"msb_[A-Za-z0-9_\-]{8,}"), f"msb_{REDACTED}"),
]

# The loggers that print request lines: uvicorn logs WebSocket handshakes on
# "uvicorn.error" (even with --no-access-log) and HTTP requests on "uvicorn.access";
# Django logs the path of every 4xx/5xx on "django.request"; django-ninja logs an
# unexpected Authorization header on "django" when DEBUG is on.
REQUEST_LOGGERS = ("uvicorn.error", "uvicorn.access", "django.request", "django.server", "django")


def redact(text: str) -> str:
    """``text`` with every credential replaced by ``[redacted]``."""
    for pattern, replacement in _PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _redact_value(value: Any) -> Any:
    return redact(value) if isinstance(value, str) else value


class RedactSecrets(logging.Filter):
    """Rewrites a record's message and string arguments in place (the arguments are
    kept as a tuple of the same length: uvicorn's access formatter unpacks them)."""

    def filter(self, record: logging.LogRecord) -> bool:
        if isinstance(record.msg, str):
            record.msg = redact(record.msg)
        if isinstance(record.args, tuple):
            record.args = tuple(_redact_value(arg) for arg in record.args)
        elif isinstance(record.args, dict):
            record.args = {key: _redact_value(arg) for key, arg in record.args.items()}
        return True


def install() -> None:
    """Attach one :class:`RedactSecrets` to each of :data:`REQUEST_LOGGERS` (idempotent)."""
    for name in REQUEST_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, RedactSecrets) for f in logger.filters):
            logger.addFilter(RedactSecrets())
