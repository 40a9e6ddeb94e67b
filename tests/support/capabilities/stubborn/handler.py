"""A handler that never reports progress, so only termination can stop it."""

from __future__ import annotations

import time
from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    time.sleep(float(ctx.params.get("seconds", 60)))
    return {}
