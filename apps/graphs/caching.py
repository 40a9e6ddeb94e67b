"""Cache keys of cacheable nodes: the same service version, parameters and input
content give the same key, so a trained result is reused instead of recomputed."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from apps.capabilities.registry import Capability


def _content_only(value: Any) -> Any:
    """Reduce artifact references (objects carrying a ``sha256``) to their content hash,
    so the same bytes stored under another key or id still match."""
    if isinstance(value, dict):
        if isinstance(value.get("sha256"), str):
            return {"sha256": value["sha256"]}
        return {key: _content_only(item) for key, item in value.items()}
    if isinstance(value, list):
        return [_content_only(item) for item in value]
    return value


def cache_key(capability: Capability, params: dict[str, Any], inputs: dict[str, Any]) -> str:
    """sha256 of service id, service version, canonical params and input content.

    Inputs are keyed by the edge they arrive on; the predecessor's node id is part of
    the key because a handler may read ``inputs[node_id]``.
    """
    canonical = json.dumps(
        {
            "service": capability.id,
            "version": capability.version,
            "params": params,
            "inputs": _content_only(inputs),
        },
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
    )
    return hashlib.sha256(canonical.encode()).hexdigest()
