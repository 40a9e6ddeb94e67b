"""The capabilities broadcast on each broker: ``capabilities.report`` (the capabilities
template, which asks the workers) and ``GET /api/capabilities?shape=original`` answer
with the live workers' manifests whether Celery's broadcast goes over Redis or over
RabbitMQ (a fanout exchange of its own on amqp)."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.graphs.planner import plan
from apps.jobs.models import NodeRun
from tests.faults.conftest import BROKERS
from tests.faults.stack import Api, Stack

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.mark.parametrize("broker_kind", BROKERS, indirect=True)
def test_the_capabilities_job_and_the_original_manifest_see_the_worker(
    stack: Stack, api_for: Callable[[User], Api], broker_kind: str
) -> None:
    stack.start_web()
    api = api_for(User.objects.create_user("ada"))
    stack.start_worker("cpu", [settings.CELERY_CPU_QUEUE])

    job_id = api.submit(plan("capabilities", None, {}).to_json())
    statuses = api.wait_finished([job_id], timeout=90)
    manifest = api.request("GET", "/api/capabilities?shape=original")

    assert statuses == {job_id: "completed"}
    report = NodeRun.objects.get(job_id=job_id, node_id="merge_manifest").output
    assert [w["hostname"] for w in report["workers"]] == ["cpu worker 1"]
    assert report["workers"][0]["queues"] == [settings.CELERY_CPU_QUEUE]
    assert manifest.status == 200, manifest.body
    ids = [c["id"] for c in manifest.body["capabilities"]]
    assert "capabilities.report" in ids
    assert "lora.train" not in ids  # no gpu worker is up
    assert manifest.body["sources"]["control"] == {"plane": "node", "number": len(ids)}
    assert [c["id"] for c in report["capabilities"]] == ids
