"""debug.sleep: sleeps for ``seconds``, in slices short enough to notice a cancel."""

from __future__ import annotations

import time
from typing import Any

from apps.capabilities.context import NodeContext

SLICE_SECONDS = 0.2


def run(ctx: NodeContext) -> dict[str, Any]:
    """Sleep ``params.seconds`` (default 1) and return ``{"slept": seconds}``.

    Sleeps in slices of at most 0.2 s and reports progress after each one, so a cancel
    stops it (``Cancelled``) within 0.2 s.
    """
    seconds = ctx.params.get("seconds", 1)
    deadline = time.monotonic() + seconds
    remaining = float(seconds)
    while remaining > 0:
        time.sleep(min(SLICE_SECONDS, remaining))
        remaining = deadline - time.monotonic()
        elapsed = min(float(seconds), seconds - remaining)
        ctx.progress(elapsed / seconds, f"slept {elapsed:.1f} of {seconds} s")
    if seconds == 0:
        ctx.progress(1.0, "slept 0 s")
    return {"slept": seconds}
