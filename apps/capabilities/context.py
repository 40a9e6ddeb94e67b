"""What a service handler receives: :class:`NodeContext`."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from apps.capabilities.errors import Cancelled


@dataclass
class NodeContext:
    """Everything a handler may use; the worker builds one per attempt.

    ``attempt`` counts from 1. ``params`` are the node's parameters, already valid
    against the service's parameter schema. ``inputs`` maps each predecessor node id to
    that node's output. ``store`` is the artifact store (the storage interface of
    ``apps.jobs``). ``progress_callback(fraction, message)`` records progress;
    ``cancelled_callback()`` says whether the job was cancelled.

    A handler returns its output as a JSON object and reports progress through
    :meth:`progress`, which is also where it learns about cancellation.
    """

    job_id: str
    node_id: str
    attempt: int
    params: dict[str, Any]
    inputs: dict[str, dict[str, Any]]
    store: Any
    progress_callback: Callable[[float, str | None], None] = field(repr=False)
    cancelled_callback: Callable[[], bool] = field(repr=False)
    # Saving and reading artifacts (``apps.jobs.artifacts.NodeArtifacts``): ``save(name,
    # bytes | path | file, content_type) -> reference``, ``open(reference)``,
    # ``fetch(reference, folder) -> path``.
    artifacts: Any = field(default=None, repr=False)
    # A private scratch folder for this attempt, removed when the handler returns.
    workdir: Path | None = None

    def progress(self, fraction: float, message: str | None = None) -> None:
        """Report ``fraction`` (clamped to 0..1) done, then stop if the job was cancelled.

        Raises :class:`~apps.capabilities.errors.Cancelled` after recording the progress
        when the job was cancelled, so a handler that reports progress regularly stops
        within one step of a cancel.
        """
        self.progress_callback(min(1.0, max(0.0, fraction)), message)
        if self.cancelled_callback():
            raise Cancelled(f"job {self.job_id} was cancelled (node {self.node_id})")

    def cancelled(self) -> bool:
        """Return whether the job was cancelled; for handlers that clean up before stopping."""
        return self.cancelled_callback()
