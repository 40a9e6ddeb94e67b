"""Adding a service is copying a folder: a copy of ``debug_echo``, edited only inside
itself, is listed by ``/api/capabilities``, runs in a job on a real worker, and gets its
parameter defaults from its own schema (no handler or engine code names them)."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.capabilities.registry import SERVICES_DIR, get_registry
from apps.jobs.models import ApiToken, Job, NodeRun
from testkit.graphs import graph, node, wait_for_job

pytestmark = pytest.mark.django_db(transaction=True)

HANDLER = '''"""greeting.say: a greeting, repeated."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext


def run(ctx: NodeContext) -> dict[str, Any]:
    return {"text": " ".join([ctx.params["greeting"]] * ctx.params["times"])}
'''


def _copy_debug_echo(into: Path) -> Path:
    """Copy the folder, then edit only the copy: its declaration and its handler."""
    folder = into / "greeting"
    shutil.copytree(SERVICES_DIR / "debug_echo", folder, ignore=shutil.ignore_patterns("__py*"))
    declaration = json.loads((folder / "capability.json").read_text())
    declaration.update(
        id="greeting.say",
        label="Greeting",
        description="Says a greeting a number of times.",
        params={
            "type": "object",
            "properties": {
                "greeting": {"type": "string", "default": "hello"},
                "times": {"type": "integer", "minimum": 1, "default": 2},
            },
            "additionalProperties": False,
        },
        outputs=[{"name": "text", "kind": "json", "description": "The greeting."}],
        handler="greeting.handler:run",
    )
    (folder / "capability.json").write_text(json.dumps(declaration, indent=2))
    (folder / "handler.py").write_text(HANDLER)
    return folder


def test_a_copied_folder_is_a_new_service(
    tmp_path: Path, settings: Any, start_worker: Callable[..., Any]
) -> None:
    extra = tmp_path / "services"
    extra.mkdir()
    _copy_debug_echo(extra)
    settings.MYSPINBOT_CAPABILITY_DIRS = [str(extra)]
    get_registry.cache_clear()
    try:
        start_worker(
            "cpu",
            [settings.CELERY_CPU_QUEUE],
            env={"MYSPINBOT_CAPABILITY_DIRS": str(extra), "PYTHONPATH": str(extra)},
        )
        user = User.objects.create_user("ada", password="pw-ada-123")
        _, token = ApiToken.issue(user, "test")
        client = Client(headers={"Authorization": f"Bearer {token}"})

        services = {s["id"]: s for s in client.get("/api/capabilities").json()["services"]}
        assert "greeting.say" in services
        assert services["greeting.say"]["queue"] == "cpu"
        assert services["greeting.say"]["params"]["properties"]["times"]["default"] == 2

        def submit(params: dict[str, Any]) -> Job:
            body = {"graph": graph([node("say", "greeting.say", params=params)], [])}
            response = client.post("/api/jobs", json.dumps(body), content_type="application/json")
            assert response.status_code == 201, response.content
            return wait_for_job(Job.objects.get(pk=response.json()["id"]))

        defaults = submit({})
        assert defaults.status == "completed"
        assert NodeRun.objects.get(job=defaults).output == {"text": "hello hello"}

        chosen = submit({"greeting": "hi", "times": 3})
        assert NodeRun.objects.get(job=chosen).output == {"text": "hi hi hi"}

        # The copy's schema is enforced like any service's.
        body = {"graph": graph([node("say", "greeting.say", params={"times": 0})], [])}
        refused = client.post("/api/jobs", json.dumps(body), content_type="application/json")
        assert refused.status_code == 422, refused.content
    finally:
        get_registry.cache_clear()
