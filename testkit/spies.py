"""Spies: wrappers that call the real function and count the calls, for tests that pin
how often something is done (never a stand-in for it)."""

from __future__ import annotations

from typing import Any


class Counting:
    """Calls the real function and counts the calls."""

    def __init__(self, real: Any) -> None:
        self.real, self.calls = real, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        return self.real(*args, **kwargs)
