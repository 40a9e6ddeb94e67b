from __future__ import annotations

import copy

import pytest
from django.contrib.auth.models import User

from apps.capabilities.registry import get_registry
from apps.graphs.planner import (
    UnknownTemplate,
    choose_lipsync,
    choose_speech,
    load_templates,
    plan,
)
from apps.graphs.validation import GraphValidationError, validate_graph
from apps.jobs import engine
from testkit.graphs import states

INPUTS = {"photos": ["a1"], "voice_sample": "v1", "transcript": "Hello there."}


def test_the_three_pipelines_of_the_catalogue_are_templates() -> None:
    assert sorted(load_templates()) == [
        "capabilities",
        "lora_video",
        "narrated_video",
        "quick",
        "talking_head",
        "train_and_render",
    ]


@pytest.mark.parametrize(
    "name",
    ["capabilities", "lora_video", "narrated_video", "quick", "talking_head", "train_and_render"],
)
def test_every_template_plans_into_a_valid_graph(name: str) -> None:
    node_ids = {node["id"] for node in load_templates()[name].graph["nodes"]}
    params = {"script": {"topic": "otters"}} if "script" in node_ids else {}

    document = plan(name, params, inputs=INPUTS)

    assert document.metadata["template"] == name
    assert len(document.nodes) == len(load_templates()[name].graph["nodes"])


def test_params_merge_over_the_template_and_inputs_fill_the_nodes() -> None:
    document = plan("narrated_video", {"script": {"topic": "otters"}}, INPUTS)

    script = document.node("script")
    assert script.params == {"topic": "otters", "tone": "friendly", "max_words": 120}
    assert document.node("voice_profile").input == {
        "voice_sample": "v1",
        "transcript": "Hello there.",
    }
    assert document.node("lipsync").input == {"photos": ["a1"]}
    assert document.node("lipsync").service == "lipsync.sync"


def test_a_gpu_lipsync_backend_outranks_the_cpu_one_and_the_metadata_says_why() -> None:
    document = copy.deepcopy(load_templates()["quick"].graph)

    said = choose_lipsync(document, lambda: True)
    document["nodes"][0]["params"]["topic"] = "otters"

    lipsync = next(node for node in document["nodes"] if node["id"] == "lipsync")
    assert (lipsync["service"], lipsync["plane"]) == ("lipsync.gpu", "gpu")
    assert said["lipsync"].startswith("GPU backend (lipsync.gpu)")
    validate_graph(document, registry=get_registry())


def test_without_a_gpu_backend_the_cpu_lipsync_runs_and_the_metadata_says_why() -> None:
    document = copy.deepcopy(load_templates()["quick"].graph)

    said = choose_lipsync(document, lambda: False)

    assert [n["service"] for n in document["nodes"] if n["id"] == "lipsync"] == ["lipsync.sync"]
    assert said == {
        "lipsync": "CPU face-mesh backend (lipsync.sync): no worker offers a GPU lip-sync backend"
    }
    assert choose_lipsync(load_templates()["capabilities"].graph, lambda: True) == {}


def test_a_gpu_cloning_engine_speaks_a_profiled_narration_and_the_metadata_says_so() -> None:
    document = copy.deepcopy(load_templates()["quick"].graph)

    said = choose_speech(document, lambda: True)
    document["nodes"][0]["params"]["topic"] = "otters"

    speech = next(node for node in document["nodes"] if node["id"] == "speech")
    assert (speech["service"], speech["plane"]) == ("tts.clone", "gpu")
    assert said["speech"].startswith("GPU cloning engine (tts.clone)")
    validate_graph(document, registry=get_registry())


def test_without_a_cloning_engine_or_a_profile_tts_speak_runs() -> None:
    document = copy.deepcopy(load_templates()["quick"].graph)

    said = choose_speech(document, lambda: False)

    assert [n["service"] for n in document["nodes"] if n["id"] == "speech"] == ["tts.speak"]
    assert said["speech"].startswith("CPU engine (tts.speak): no worker offers")
    # speech without a voice profile has no clip to clone: the probe is not even asked
    unprofiled = {
        "nodes": [{"id": "s", "service": "tts.speak", "plane": "cpu", "params": {}}],
        "edges": [],
    }
    assert choose_speech(unprofiled, lambda: pytest.fail("asked")) == {}
    assert unprofiled["nodes"][0]["service"] == "tts.speak"


def test_a_missing_input_and_an_unknown_node_are_named() -> None:
    with pytest.raises(GraphValidationError) as error:
        plan("train_and_render", {"nope": {}}, {})

    issues = sorted((issue.rule, issue.node) for issue in error.value.issues)
    assert issues == [("missing_input", "train_lora"), ("unknown_node", "nope")]


def test_bad_params_fail_the_service_schema() -> None:
    with pytest.raises(GraphValidationError) as error:
        plan(
            "train_and_render",
            {"script": {"topic": "otters"}, "train_lora": {"seconds": -1}},
            INPUTS,
        )

    assert [(issue.rule, issue.node) for issue in error.value.issues] == [
        ("invalid_params", "train_lora")
    ]


def test_an_unknown_template_lists_the_known_ones() -> None:
    with pytest.raises(
        UnknownTemplate, match="templates: capabilities, lora_video, narrated_video"
    ):
        plan("nope")


@pytest.mark.django_db(transaction=True)
def test_submit_template_stores_a_job_named_after_it() -> None:
    user = User.objects.create_user("ada")

    job = engine.submit_template(user, "narrated_video", {"script": {"topic": "otters"}}, INPUTS)

    assert job.template == "narrated_video"
    assert states(job) == {
        "script": "queued",
        "voice_profile": "queued",
        "speech": "pending",
        "lipsync": "pending",
        "video": "pending",
    }
    assert job.graph.document["metadata"]["lipsync"].startswith("CPU face-mesh backend")


def test_the_original_templates_use_the_real_services() -> None:
    templates = load_templates()

    assert templates["train_and_render"].services == [
        "image.keyframe",
        "lipsync.sync",
        "llm.generate_script",
        "lora.train",
        "tts.speak",
        "video.animate",
        "video.compose",
    ]
    assert templates["narrated_video"].services == [
        "lipsync.sync",
        "llm.generate_script",
        "tts.speak",
        "video.compose",
        "voice.build_profile",
    ]
    # The original capabilities workflow: ask the workers, merge into the job's result.
    assert templates["capabilities"].services == ["capabilities.report"]
    assert not any(
        service.startswith("debug.")
        for name in ("capabilities", "train_and_render", "narrated_video", "lora_video", "quick")
        for service in templates[name].services
    )
