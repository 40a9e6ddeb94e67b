"""Writes an artifact, sleeps, writes another: an attempt killed in the middle leaves the
first one behind, which is what the fault tests look for."""

from __future__ import annotations

import hashlib
import time
from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    seconds = float(ctx.params.get("seconds", 1))
    size = int(ctx.params.get("size_bytes", 64))
    marker = f"{ctx.job_id}/{ctx.node_id}/{ctx.attempt}".encode()
    first = ctx.artifacts.save("first.txt", marker, "text/plain")
    deadline = time.monotonic() + seconds
    while (left := deadline - time.monotonic()) > 0:
        time.sleep(min(0.1, left))
        ctx.progress(min(0.9, 1 - left / seconds) if seconds else 0.9, "sleeping")
    # Deterministic bytes of the asked size, different per node.
    block = hashlib.sha256(marker.rsplit(b"/", 1)[0]).digest() * 32
    body = (block * (size // len(block) + 1))[:size]
    ctx.progress(0.95, "writing the second artifact")
    second = ctx.artifacts.save("second.bin", body, "application/octet-stream")
    return {"first": first, "second": second, "sha256": hashlib.sha256(body).hexdigest()}
