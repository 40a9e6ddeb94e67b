"""Stores a text after what its predecessors stored: real artifacts from a cacheable node,
whose bytes show that a successor read its predecessor's artifact."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    body = b""
    for source in sorted(ctx.inputs):
        with ctx.artifacts.open(ctx.inputs[source]["text"]) as stored:
            body += stored.read() + b"\n"
    body += str(ctx.params.get("text", "")).encode()
    return {"text": ctx.artifacts.save("text.txt", body, "text/plain")}
