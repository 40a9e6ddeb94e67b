from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import pytest

from apps.capabilities.context import NodeContext


@dataclass
class Recorder:
    """Stands in for the worker: records progress, and cancels after N reports if asked."""

    cancel_after: int | None = None
    reports: list[tuple[float, str | None]] = field(default_factory=list)

    def progress(self, fraction: float, message: str | None) -> None:
        self.reports.append((fraction, message))

    def cancelled(self) -> bool:
        return self.cancel_after is not None and len(self.reports) >= self.cancel_after


ContextFactory = Callable[..., tuple[NodeContext, Recorder]]


@pytest.fixture
def make_context() -> ContextFactory:
    def make(
        params: dict[str, Any] | None = None,
        *,
        attempt: int = 1,
        inputs: dict[str, dict[str, Any]] | None = None,
        cancel_after: int | None = None,
    ) -> tuple[NodeContext, Recorder]:
        recorder = Recorder(cancel_after=cancel_after)
        ctx = NodeContext(
            job_id="job-1",
            node_id="node-1",
            attempt=attempt,
            params=params or {},
            inputs=inputs or {},
            store=None,
            progress_callback=recorder.progress,
            cancelled_callback=recorder.cancelled,
        )
        return ctx, recorder

    return make
