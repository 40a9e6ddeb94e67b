"""Celery tasks: one per service, named after it, all running the same engine code.

The web process sends these by name and never imports handler code; a worker
registers every declared service and imports a handler only when it runs it.
Each worker also runs the sweeper that recovers nodes of dead workers.
"""

from __future__ import annotations

from typing import Any

from celery import Task, signals

from apps.capabilities.registry import Capability, get_registry
from apps.jobs import execution
from apps.jobs.sweeper import Sweeper
from myspinbot.celery import app


def _register(capability: Capability) -> Task:
    def run_node(self: Task, job_id: str, node_id: str, attempt: int) -> None:
        request = self.request
        execution.execute(
            job_id,
            node_id,
            attempt,
            str(request.hostname or ""),
            task_id=str(request.id or ""),
            redelivered=bool((request.delivery_info or {}).get("redelivered")),
        )

    run_node.__name__ = run_node.__qualname__ = capability.id.replace(".", "_")
    return app.task(
        bind=True,
        name=capability.id,
        acks_late=True,
        reject_on_worker_lost=True,
        ignore_result=True,
    )(run_node)


SERVICE_TASKS = {capability.id: _register(capability) for capability in get_registry().all()}

_sweeper: Sweeper | None = None


@signals.worker_ready.connect
def _start_sweeper(**_: Any) -> None:
    global _sweeper
    _sweeper = Sweeper()
    _sweeper.start()


@signals.worker_shutdown.connect
def _stop_sweeper(**_: Any) -> None:
    if _sweeper is not None:
        _sweeper.stop()
