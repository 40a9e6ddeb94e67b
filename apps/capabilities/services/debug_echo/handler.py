"""debug.echo: returns what it was given."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    """Return ``{"params": ctx.params, "inputs": ctx.inputs}``."""
    return {"params": ctx.params, "inputs": ctx.inputs}
