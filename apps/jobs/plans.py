"""``POST /api/plan``: a graph for a request in words, for review; nothing runs.

It lives with the jobs because a plan's inputs are checked the way a job's are: every
``{"artifact": "<id>"}`` must be one of the caller's uploads (:func:`apps.jobs.submission.
resolve_artifact_refs`), so a plan that ``POST /api/jobs`` would refuse is refused here.
"""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.http import HttpRequest
from ninja import Router, Schema
from pydantic import Field

from apps.capabilities.manifest import live_workers, runnable_services
from apps.graphs.llm_planner import propose
from apps.graphs.user_templates import templates_for
from apps.jobs.api import caller
from apps.jobs.submission import resolve_artifact_refs
from myspinbot.error_shape import ErrorOut
from myspinbot.errors import Rejected
from myspinbot.jsonb import check_storable
from myspinbot.rate_limits import take

router = Router(tags=["capabilities"])


class PlanIn(Schema):
    """A request in words and the job inputs a plan may use (uploads as
    ``{"artifact": "<id>"}``)."""

    request: str = Field(min_length=1, max_length=2000, pattern=r"\S")
    inputs: dict[str, Any] = {}


class PlanOut(Schema):
    source: str
    reason: str | None
    template: str | None
    attempts: int
    model: str | None
    graph: dict[str, Any]


@router.post("/plan", response={200: PlanOut, 401: ErrorOut, 422: ErrorOut, 429: ErrorOut})
def plan_request(request: HttpRequest, body: PlanIn) -> dict[str, Any]:
    """A ``langgraph.v1`` graph for ``request`` to review: built by the LLM from the
    capability manifests of the services the workers that are up offer, or the
    best-matching template (``source: "template"``, ``reason`` says why). Nothing runs;
    ``POST /api/jobs`` runs the returned graph unchanged. An artifact in ``inputs`` that
    is not the caller's is a 422 ``unknown_artifact``. Limited per user
    (``MYSPINBOT_PLANS_PER_WINDOW`` per ``MYSPINBOT_PLAN_WINDOW_SECONDS``)."""
    owner = caller(request)
    check_storable(body.request, "request")
    check_storable(body.inputs, "inputs")
    # The plan keeps the references as given: POST /api/jobs resolves them again.
    resolve_artifact_refs(owner, body.inputs)
    wait = take(
        f"myspinbot:plan:user:{owner.pk}",
        limit=settings.MYSPINBOT_PLANS_PER_WINDOW,
        window_seconds=settings.MYSPINBOT_PLAN_WINDOW_SECONDS,
    )
    if wait:
        raise Rejected(
            429,
            "too_many_plans",
            f"at most {settings.MYSPINBOT_PLANS_PER_WINDOW} plans per "
            f"{settings.MYSPINBOT_PLAN_WINDOW_SECONDS} s; try again in {wait} s",
            headers={"Retry-After": str(wait)},
        )
    proposal = propose(
        body.request,
        body.inputs,
        offered=runnable_services(live_workers()),
        templates=templates_for(owner),
    )
    return proposal.to_json()
