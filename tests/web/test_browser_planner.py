""" "Describe the video" in Debian's Chromium against the live stack (uvicorn, a real cpu
worker, PostgreSQL, Redis, S3) with the stand-in Ollama server planning: describe →
review the planned DAG and its parameters → run → the video plays."""

from __future__ import annotations

import copy
import json
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from django.conf import settings
from django.contrib.auth.models import User

from apps.graphs.planner import load_templates
from apps.jobs.management.commands.spin import make_sample
from apps.jobs.models import Job
from testkit.graphs import wait_for_job
from testkit.services import CeleryWorker
from tests.support.ollama import FakeOllama, chat_reply
from tests.web.conftest import Tab, sign_in

pytestmark = pytest.mark.django_db(transaction=True)

REQUEST = "A short talking portrait of me saying that otters hold hands"
NARRATION = "Otters hold hands while they sleep."


def quick_plan() -> dict[str, Any]:
    """What the stand-in LLM answers: the quick pipeline, small and with its narration."""
    plan = copy.deepcopy(load_templates()["quick"].graph)
    plan["workflowId"] = "otters"
    for node in plan["nodes"]:
        if node["id"] == "script":
            node["params"] = {"narration": NARRATION}
        if node["id"] == "video":
            node["params"] = {"width": 320, "height": 240, "fps": 12, "captions": True}
    return plan


@pytest.fixture
def ollama() -> Iterator[FakeOllama]:
    server = FakeOllama()
    server.start()
    yield server
    server.stop()


@pytest.fixture
def worker_env(worker_env: dict[str, str], ollama: FakeOllama) -> dict[str, str]:
    """The web process plans with the stand-in LLM (the script node has its narration,
    so the worker asks no LLM)."""
    return {**worker_env, "MYSPINBOT_LLM_URL": ollama.url, "MYSPINBOT_LLM_TIMEOUT": "10"}


def test_describe_review_the_dag_run_and_watch_the_video(
    open_tab: Callable[..., Tab],
    start_worker: Callable[..., CeleryWorker],
    ollama: FakeOllama,
    tmp_path: Path,
) -> None:
    ada = User.objects.create_user("ada", password="ada-secret-pw")
    portrait, voice, transcript = make_sample(tmp_path / "sample")
    ollama.reply(chat_reply(quick_plan()))
    start_worker("cpu", [settings.CELERY_CPU_QUEUE], concurrency=2)
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")

    # The planner offers only what a worker runs: wait until the worker answers.
    tab.go("/new/")
    quick = tab.page.locator("#pipeline-quick")
    deadline = time.monotonic() + 30
    while True:
        quick.wait_for()
        if quick.is_enabled() or time.monotonic() > deadline:
            break
        time.sleep(1)
        tab.page.reload()
    assert quick.is_enabled()

    # Describe the video, with the portrait, voice sample and transcript chosen below.
    tab.page.set_input_files("#portrait", str(portrait))
    tab.page.locator("#portrait-face").wait_for()
    tab.page.set_input_files("#voice", str(voice))
    tab.page.fill("#transcript", transcript)
    tab.page.fill("#describe-request", REQUEST)
    tab.page.get_by_role("button", name="Plan it").click()

    # The plan is shown for review: who planned it, the DAG, each step's parameters.
    tab.page.locator("#plan-review").wait_for()
    assert tab.page.locator("#plan-source").text_content() == (
        "Planned by llama3.1:8b from the services the workers offer (1 attempt)."
    )
    drawn = tab.page.eval_on_selector_all(
        "#plan-dag [data-node-id]",
        "els => els.map(el => [el.dataset.nodeId, el.querySelector('.detail').textContent])",
    )
    assert drawn == [[n["id"], n["service"]] for n in quick_plan()["nodes"]]
    assert tab.page.locator("#plan-dag path.edge").count() == 5
    video_params = tab.page.locator("#plan-params details[data-node-id='video'] pre")
    assert json.loads(video_params.text_content() or "") == {
        "width": 320,
        "height": 240,
        "fps": 12,
        "captions": True,
    }
    assert Job.objects.count() == 0  # nothing runs before "Run this plan"
    (asked,) = ollama.requests
    assert asked["messages"][1] == {"role": "user", "content": REQUEST}
    assert (
        "The job's inputs are: image, photos, portrait, transcript, voice_sample."
        in (asked["messages"][0]["content"])
    )

    # Run it: the job runs the reviewed graph unchanged, and the video plays.
    tab.page.get_by_role("button", name="Run this plan").click()
    tab.page.wait_for_url(f"{tab.base}/jobs/*/")
    job = Job.objects.get(owner=ada)
    assert tab.page.url == f"{tab.base}/jobs/{job.pk}/"
    stored = job.graph.document
    assert [(n["id"], n["service"], n["params"]) for n in stored["nodes"]] == [
        (n["id"], n["service"], n["params"]) for n in quick_plan()["nodes"]
    ]
    assert stored["metadata"] == {
        "catalogue": "myspinbot",
        "planner": "llm",
        "model": "llama3.1:8b",
    }
    assert stored["nodes"][1]["input"]["transcript"] == transcript
    job = wait_for_job(job, timeout=300)
    assert job.status == "completed", job.error
    video = tab.page.locator("#players video[data-node-id='video']")
    video.wait_for(timeout=60_000)
    tab.page.wait_for_function("document.querySelector('#players video').duration > 0")
    tab.screenshot("planned-job")
    assert tab.errors == []


WORKFLOW = {
    "4": {"class_type": "CheckpointLoaderSimple", "inputs": {"ckpt_name": "tiny-sd.safetensors"}},
    "6": {"class_type": "CLIPTextEncode", "inputs": {"text": "a red fox", "clip": ["4", 1]}},
    "3": {
        "class_type": "KSampler",
        "inputs": {"seed": 42, "model": ["4", 0], "positive": ["6", 0]},
    },
    "9": {"class_type": "SaveImage", "inputs": {"images": ["3", 0], "filename_prefix": "msb"}},
}


def test_add_a_comfyui_workflow_as_a_pipeline_and_delete_it(
    open_tab: Callable[..., Tab], tmp_path: Path
) -> None:
    from apps.graphs.models import WorkflowTemplate

    ada = User.objects.create_user("ada", password="ada-secret-pw")
    User.objects.create_user("bob", password="bob-secret-pw")
    (tmp_path / "fox.json").write_text(json.dumps(WORKFLOW))
    (tmp_path / "fox.sidecar.json").write_text(
        json.dumps({"bindings": {"prompt": {"node": "6", "field": "txt"}}})
    )
    (tmp_path / "fixed.sidecar.json").write_text(
        json.dumps(
            {"prompt": {"node": "6", "field": "text"}, "seed": {"node": "3", "field": "seed"}}
        )
    )
    tab = open_tab()
    sign_in(tab, "ada", "ada-secret-pw")
    tab.go("/new/")
    tab.page.locator("#pipeline-quick").wait_for()

    # A sidecar that binds a field the node lacks is refused, saying which.
    tab.page.locator("#workflow-box summary").click()
    tab.page.fill("#workflow-label", "Fox sketch")
    tab.page.set_input_files("#workflow-file", str(tmp_path / "fox.json"))
    tab.page.set_input_files("#workflow-sidecar", str(tmp_path / "fox.sidecar.json"))
    tab.page.get_by_role("button", name="Add the pipeline").click()
    error = tab.page.locator("#workflow-error")
    error.wait_for()
    assert error.text_content() == (
        "invalid graph: invalid_workflow: binding 'prompt': node '6' has no input 'txt'"
    )
    assert WorkflowTemplate.objects.count() == 0

    # A good one becomes a pipeline of ada's own.
    tab.page.set_input_files("#workflow-sidecar", str(tmp_path / "fixed.sidecar.json"))
    tab.page.get_by_role("button", name="Add the pipeline").click()
    record = None
    deadline = time.monotonic() + 10
    while record is None and time.monotonic() < deadline:
        record = WorkflowTemplate.objects.filter(owner=ada).first()
        time.sleep(0.1)
    assert record is not None
    assert record.bindings == {
        "prompt": {"node": "6", "field": "text"},
        "seed": {"node": "3", "field": "seed"},
    }
    mine = tab.page.locator(f"input[name='pipeline'][value='{record.name}']")
    mine.wait_for(state="attached")
    assert tab.page.locator(f"label[for='pipeline-{record.name}'] strong").text_content() == (
        "Fox sketch"
    )
    assert error.is_hidden()

    # Bob does not see it.
    other = open_tab()
    sign_in(other, "bob", "bob-secret-pw")
    other.go("/new/")
    other.page.locator("#pipeline-quick").wait_for()
    assert other.page.locator(f"input[value='{record.name}']").count() == 0

    # Deleting asks first, then the pipeline is gone.
    tab.page.get_by_role("button", name="Delete the pipeline Fox sketch").click()
    tab.page.locator("#confirm-yes").click()
    mine.wait_for(state="detached")
    assert WorkflowTemplate.objects.count() == 0
    # The one refused upload is the browser's only complaint.
    (refused,) = tab.errors
    assert "status of 422" in refused
    assert f"{tab.base}/api/templates" in refused
    assert other.errors == []
