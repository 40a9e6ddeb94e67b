"""Typed readers for settings taken from the environment.

Each helper returns the parsed value, the default when the variable is unset or
empty, or raises ``ImproperlyConfigured`` naming the variable and the bad value.
A helper called without a default makes the variable required.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Final, TypeVar
from urllib.parse import urlsplit

from django.core.exceptions import ImproperlyConfigured

T = TypeVar("T")


class _Missing:
    def __repr__(self) -> str:
        return "REQUIRED"


REQUIRED: Final = _Missing()

_TRUE = {"1", "true", "yes", "on"}
_FALSE = {"0", "false", "no", "off"}


def _raw(name: str, environ: Mapping[str, str] | None) -> str | None:
    value = (os.environ if environ is None else environ).get(name)
    if value is None or value.strip() == "":
        return None
    return value.strip()


def _missing(name: str, default: T | _Missing) -> T:
    if isinstance(default, _Missing):
        raise ImproperlyConfigured(f"{name} must be set")
    return default


def env_str(
    name: str, default: str | _Missing = REQUIRED, *, environ: Mapping[str, str] | None = None
) -> str:
    """The variable as a stripped string."""
    raw = _raw(name, environ)
    return _missing(name, default) if raw is None else raw


def env_bool(
    name: str, default: bool | _Missing = REQUIRED, *, environ: Mapping[str, str] | None = None
) -> bool:
    """``1/true/yes/on`` or ``0/false/no/off`` (any case); anything else is an error."""
    raw = _raw(name, environ)
    if raw is None:
        return _missing(name, default)
    lowered = raw.lower()
    if lowered in _TRUE:
        return True
    if lowered in _FALSE:
        return False
    raise ImproperlyConfigured(f"{name}={raw!r} is not a boolean (use true/false, 1/0, yes/no)")


def env_int(
    name: str,
    default: int | _Missing = REQUIRED,
    *,
    min_value: int | None = None,
    max_value: int | None = None,
    environ: Mapping[str, str] | None = None,
) -> int:
    """A base-10 integer, optionally bounded (inclusive)."""
    raw = _raw(name, environ)
    if raw is None:
        value = _missing(name, default)
    else:
        try:
            value = int(raw, 10)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not an integer") from None
    _check_bounds(name, value, min_value, max_value)
    return value


def env_float(
    name: str,
    default: float | _Missing = REQUIRED,
    *,
    min_value: float | None = None,
    max_value: float | None = None,
    environ: Mapping[str, str] | None = None,
) -> float:
    """A finite decimal number, optionally bounded (inclusive)."""
    raw = _raw(name, environ)
    if raw is None:
        value = _missing(name, default)
    else:
        try:
            value = float(raw)
        except ValueError:
            raise ImproperlyConfigured(f"{name}={raw!r} is not a number") from None
        if value != value or value in (float("inf"), float("-inf")):
            raise ImproperlyConfigured(f"{name}={raw!r} is not a finite number")
    _check_bounds(name, value, min_value, max_value)
    return value


def env_list(
    name: str,
    default: list[str] | _Missing = REQUIRED,
    *,
    environ: Mapping[str, str] | None = None,
) -> list[str]:
    """A comma-separated list; blank items are an error (``a,,b`` is a typo)."""
    raw = _raw(name, environ)
    if raw is None:
        return list(_missing(name, default))
    items = [item.strip() for item in raw.split(",")]
    if any(item == "" for item in items):
        raise ImproperlyConfigured(f"{name}={raw!r} has an empty item")
    return items


def env_url(
    name: str,
    default: str | _Missing | None = REQUIRED,
    *,
    schemes: tuple[str, ...],
    environ: Mapping[str, str] | None = None,
) -> str | None:
    """A URL whose scheme is one of ``schemes`` and which names a host or a path."""
    raw = _raw(name, environ)
    if raw is None:
        return _missing(name, default)
    parts = urlsplit(raw)
    if parts.scheme not in schemes:
        raise ImproperlyConfigured(
            f"{name}={_redact(raw)!r} must use one of the schemes {', '.join(schemes)}"
        )
    if not (parts.netloc or parts.path.strip("/")):
        raise ImproperlyConfigured(f"{name}={_redact(raw)!r} names no host")
    try:
        parts.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError:
        raise ImproperlyConfigured(f"{name}={_redact(raw)!r} has an invalid port") from None
    return raw


def _redact(url: str) -> str:
    parts = urlsplit(url)
    if parts.password:
        return url.replace(f":{parts.password}@", ":***@")
    return url


def _check_bounds(
    name: str, value: float, min_value: float | None, max_value: float | None
) -> None:
    if min_value is not None and value < min_value:
        raise ImproperlyConfigured(f"{name}={value} is below the minimum {min_value}")
    if max_value is not None and value > max_value:
        raise ImproperlyConfigured(f"{name}={value} is above the maximum {max_value}")
