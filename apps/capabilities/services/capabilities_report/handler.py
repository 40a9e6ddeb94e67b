"""capabilities.report: ask the workers, merge their manifests into the job's result."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.manifest import manifest, original_manifest
from myspinbot.errors import TransientError


def run(ctx: NodeContext) -> dict[str, Any]:
    """The manifest (``apps.capabilities.manifest``) in both shapes; workers reported by
    predecessor ``capabilities.report`` nodes that did not answer now are kept."""
    report = manifest(float(ctx.params["timeout_seconds"]), staff=False)
    if not report["workers"]:
        # This node runs on a worker, so one is up: its answer was late (a worker's first
        # report, which finds its speech engines, can take a while). Ask again later.
        raise TransientError("no_worker_answer", report["note"])
    workers = list(report["workers"])
    seen = {_identity(worker) for worker in workers}
    for output in ctx.inputs.values():
        earlier = output.get("workers") if isinstance(output, dict) else None
        for worker in earlier if isinstance(earlier, list) else []:
            if isinstance(worker, dict) and _identity(worker) not in seen:
                seen.add(_identity(worker))
                workers.append(worker)
    report["workers"] = workers
    original = original_manifest(report)
    # Output names are snake_case (capability.schema.json).
    original["generated_at"] = original.pop("generatedAt")
    return {**original, **report}


def _identity(worker: dict[str, Any]) -> tuple[Any, ...]:
    return (worker.get("hostname"), tuple(worker.get("queues") or ()))
