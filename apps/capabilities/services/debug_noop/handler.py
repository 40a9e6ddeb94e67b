"""debug.noop: does nothing."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    """Return ``{}``."""
    return {}
