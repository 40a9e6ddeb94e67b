"""Users' ComfyUI workflows as templates over the REST API: upload (validated), listed
only for their owner, planned into jobs, deleted."""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.contrib.auth.models import User
from django.test import Client

from apps.graphs.models import WorkflowTemplate
from apps.jobs.models import Job
from tests.support.clients import api_client

pytestmark = pytest.mark.django_db

WORKFLOW: dict[str, Any] = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 42, "model": ["4", 0], "positive": ["6", 0]},
    },
    "10": {"class_type": "LoadImage", "inputs": {"image": "placeholder.png"}},
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "msb"}},
}
BINDINGS = {
    "prompt": {"node": "6", "field": "text"},
    "seed": {"node": "3", "field": "seed"},
    "image": {"node": "10", "field": "image"},
}


def post_json(client: Client, path: str, body: Any) -> Any:
    return client.post(path, data=json.dumps(body), content_type="application/json")


def upload(client: Client, **fields: Any) -> Any:
    body = {"label": "Fox sketch", "workflow": WORKFLOW, "bindings": BINDINGS, **fields}
    return post_json(client, "/api/templates", body)


def test_an_uploaded_workflow_becomes_a_template_of_one_comfyui_node() -> None:
    ada = User.objects.create_user("ada")
    as_ada = api_client(ada)

    response = upload(as_ada, description="My sketchy fox")

    assert response.status_code == 201
    body = response.json()
    record = WorkflowTemplate.objects.get(owner=ada)
    assert (body["name"], body["id"]) == (f"workflow:{record.pk}", str(record.pk))
    assert (body["label"], body["description"]) == ("Fox sketch", "My sketchy fox")
    assert body["requiredInputs"] == ["image"]
    assert body["edges"] == []
    (workflow_node,) = body["nodes"]
    assert (workflow_node["id"], workflow_node["service"], workflow_node["queue"]) == (
        "workflow",
        "comfyui.workflow",
        "cpu",
    )
    assert workflow_node["params"] == {
        "workflow": WORKFLOW,
        "bindings": BINDINGS,
        "prompt": "a red fox",
        "seed": 42,
    }
    assert workflow_node["paramsSchema"]["required"] == ["workflow"]
    assert (body["available"], body["unavailableReason"]) == (
        False,
        "no worker runs comfyui.workflow",
    )


def test_only_the_owner_lists_plans_and_deletes_a_workflow_template() -> None:
    ada, bob = User.objects.create_user("ada"), User.objects.create_user("bob")
    as_ada, as_bob = api_client(ada), api_client(bob)
    name = upload(as_ada).json()["name"]
    template_id = name.split(":", 1)[1]

    ada_names = [t["name"] for t in as_ada.get("/api/templates").json()["templates"]]
    bob_names = [t["name"] for t in as_bob.get("/api/templates").json()["templates"]]
    assert ada_names == [
        "capabilities",
        "lora_video",
        "narrated_video",
        "quick",
        "talking_head",
        "train_and_render",
        name,
    ]
    assert bob_names == [
        "capabilities",
        "lora_video",
        "narrated_video",
        "quick",
        "talking_head",
        "train_and_render",
    ]

    refused = post_json(as_bob, "/api/jobs", {"template": name, "inputs": {"image": "x"}})
    assert refused.status_code == 422
    assert refused.json()["error"]["code"] == "unknown_template"
    assert as_bob.delete(f"/api/templates/{template_id}").status_code == 404
    assert WorkflowTemplate.objects.filter(pk=template_id).count() == 1

    assert as_ada.delete(f"/api/templates/{template_id}").status_code == 204
    assert WorkflowTemplate.objects.filter(pk=template_id).count() == 0
    assert as_ada.delete(f"/api/templates/{template_id}").status_code == 404
    assert [t["name"] for t in as_ada.get("/api/templates").json()["templates"]] == bob_names


def test_a_job_from_a_workflow_template_takes_its_params_and_inputs() -> None:
    ada = User.objects.create_user("ada")
    as_ada = api_client(ada)
    name = upload(as_ada).json()["name"]
    photo = as_ada.post("/api/uploads", {"file": _png("fox.png")}).json()

    response = post_json(
        as_ada,
        "/api/jobs",
        {
            "template": name,
            "params": {"workflow": {"prompt": "a blue fox", "seed": 9}},
            "inputs": {"image": {"artifact": photo["id"]}},
        },
    )

    assert response.status_code == 201, response.json()
    job = Job.objects.get(pk=response.json()["id"])
    assert job.template == name
    (workflow_node,) = job.graph.document["nodes"]
    assert workflow_node["params"]["prompt"] == "a blue fox"
    assert workflow_node["params"]["seed"] == 9
    assert workflow_node["params"]["workflow"] == WORKFLOW
    assert workflow_node["input"]["image"]["artifact"] == photo["id"]


def _png(name: str) -> Any:
    from django.core.files.uploadedfile import SimpleUploadedFile

    from tests.support.media import png_bytes

    return SimpleUploadedFile(name, png_bytes(), content_type="image/png")


@pytest.mark.parametrize(
    ("workflow", "bindings", "message"),
    [
        (
            {"1": {"inputs": {}}},
            {},
            "node '1': needs a class_type (is this the API format? export with 'Save (API)')",
        ),
        (
            {"1": {"class_type": "VAEDecode", "inputs": {"samples": ["7", 0]}}},
            {},
            "node '1': input 'samples' links to unknown node '7'",
        ),
        (
            WORKFLOW,
            {"prompt": {"node": "6", "field": "txt"}},
            "binding 'prompt': node '6' has no input 'txt'",
        ),
        (
            WORKFLOW,
            {"style": {"node": "6", "field": "text"}},
            "binding 'style': unknown (one of prompt, negative_prompt, seed, image, audio)",
        ),
    ],
)
def test_a_workflow_that_cannot_run_is_refused_naming_the_problem(
    workflow: dict[str, Any], bindings: dict[str, Any], message: str
) -> None:
    as_ada = api_client(User.objects.create_user("ada"))

    response = upload(as_ada, workflow=workflow, bindings=bindings)

    assert response.status_code == 422
    error = response.json()["error"]
    assert error["code"] == "invalid_graph"
    assert error["details"]["issues"] == [
        {
            "rule": "invalid_workflow",
            "message": message,
            "node": None,
            "edge": None,
            "path": "workflow",
        }
    ]
    assert WorkflowTemplate.objects.count() == 0


@pytest.mark.parametrize(
    ("body", "code"),
    [
        ({"label": "  ", "workflow": WORKFLOW}, "invalid_request"),
        ({"label": "x" * 101, "workflow": WORKFLOW}, "invalid_request"),
        ({"label": "Fox"}, "invalid_request"),
        ({"label": "Fox", "workflow": []}, "invalid_request"),
        (
            {"label": "Fox", "workflow": {"1": {"class_type": "A\u0000", "inputs": {}}}},
            "invalid_text",
        ),
    ],
)
def test_bad_uploads_are_4xx_and_store_nothing(body: dict[str, Any], code: str) -> None:
    as_ada = api_client(User.objects.create_user("ada"))

    response = post_json(as_ada, "/api/templates", body)

    assert response.status_code == 422
    assert response.json()["error"]["code"] == code
    assert WorkflowTemplate.objects.count() == 0


def test_a_user_keeps_at_most_the_limit_of_workflow_templates(settings: Any) -> None:
    settings.MYSPINBOT_MAX_WORKFLOW_TEMPLATES = 2
    as_ada = api_client(User.objects.create_user("ada"))
    assert [upload(as_ada).status_code for _ in range(2)] == [201, 201]

    response = upload(as_ada)

    assert response.status_code == 422
    assert response.json()["error"] == {
        "code": "too_many_templates",
        "message": "you keep 2 workflow templates; the limit is 2 (delete one first)",
        "details": {},
    }
    assert WorkflowTemplate.objects.count() == 2


def test_a_workflow_with_too_many_nodes_is_refused() -> None:
    as_ada = api_client(User.objects.create_user("ada"))
    huge = {str(i): {"class_type": "Note", "inputs": {}} for i in range(501)}

    response = upload(as_ada, workflow=huge, bindings={})

    assert response.status_code == 422
    assert response.json()["error"]["code"] == "invalid_graph"
    (issue,) = response.json()["error"]["details"]["issues"]
    assert (issue["rule"], issue["node"]) == ("invalid_params", "workflow")
