"""debug.fail: fails on purpose, to exercise retries and failure edges."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from myspinbot.errors import PermanentError, TransientError


def run(ctx: NodeContext) -> dict[str, Any]:
    """Fail as ``params`` ask, else return ``{"attempt": ctx.attempt}``.

    ``permanent`` (default false): raise ``PermanentError`` with code ``params.code`` or
    ``"debug_permanent"``. Otherwise attempts 1..``times`` (default 1) raise
    ``TransientError("debug_transient")`` and later attempts succeed.
    """
    if ctx.params.get("permanent", False):
        code = ctx.params.get("code") or "debug_permanent"
        raise PermanentError(code, f"debug.fail failed permanently on attempt {ctx.attempt}")
    times = ctx.params.get("times", 1)
    if ctx.attempt <= times:
        raise TransientError(
            "debug_transient",
            f"debug.fail failed on attempt {ctx.attempt} of the first {times}",
            details={"attempt": ctx.attempt, "times": times},
        )
    return {"attempt": ctx.attempt}
