"""The planner for a request in words, against the stand-in Ollama server: a valid plan,
a plan repaired after the validator's problems were fed back, a plan that never
validates (a template stands in and says why), a plan naming a service no worker offers
(refused with the reason), and the fallbacks when no LLM is there."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from apps.capabilities.ollama import reask_message
from apps.capabilities.registry import get_registry
from apps.graphs.llm_planner import propose
from apps.graphs.planner import load_templates
from apps.graphs.validation import GraphValidationError, validate_graph
from myspinbot.errors import Rejected
from myspinbot.schemas import load_schema
from tests.support.ollama import FakeOllama, chat_reply, closed_port_url

REQUEST = "A talking portrait of me explaining why otters hold hands"
INPUTS = {
    "photos": [{"artifact": "7f0c5a3e-0000-4000-8000-000000000001"}],
    "voice_sample": {"artifact": "7f0c5a3e-0000-4000-8000-000000000002"},
    "transcript": "Hello, this is my voice.",
}
OFFERED = {"debug.noop", "debug.echo"}
PLAN = {
    "schema": "langgraph.v1",
    "workflowId": "otters",
    "metadata": {},
    "nodes": [
        {
            "id": "first",
            "name": "Get ready",
            "service": "debug.noop",
            "plane": "cpu",
            "params": {},
            "input": {"transcript": None},
            "progressWeight": 1,
        },
        {
            "id": "second",
            "name": "Say what came in",
            "service": "debug.echo",
            "plane": "cpu",
            "params": {"topic": "otters"},
            "progressWeight": 2,
        },
    ],
    "edges": [{"from": "first", "to": "second"}],
}


def broken_plan() -> dict[str, Any]:
    """Schema-valid, but its edge names a node that is not there."""
    plan = copy.deepcopy(PLAN)
    plan["edges"] = [{"from": "first", "to": "third"}]
    return plan


def validator_problem(document: dict[str, Any]) -> str:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(document, registry=get_registry())
    return f"the graph is not valid: {caught.value}"


@pytest.fixture(autouse=True)
def _no_gpu_probe(settings: Any) -> None:
    # A template's plan would ask the workers about GPU lip-sync; none is up here.
    settings.MYSPINBOT_LIPSYNC_GPU_PROBE = False


def test_a_valid_plan_comes_back_with_the_inputs_filled_in(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply(PLAN))

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert (proposal.source, proposal.reason, proposal.template) == ("llm", None, None)
    assert (proposal.attempts, proposal.model) == (1, "llama3.1:8b")
    assert [n["id"] for n in proposal.graph["nodes"]] == ["first", "second"]
    assert proposal.graph["nodes"][0]["input"] == {"transcript": "Hello, this is my voice."}
    assert proposal.graph["metadata"] == {"planner": "llm", "model": "llama3.1:8b"}
    validate_graph(proposal.graph, registry=get_registry())
    (sent,) = ollama.requests
    assert sent["format"] == load_schema("graph")
    assert sent["stream"] is False
    system, user = sent["messages"]
    assert user == {"role": "user", "content": REQUEST}
    assert system["role"] == "system"
    assert '"id": "debug.echo"' in system["content"]
    assert '"id": "debug.noop"' in system["content"]
    assert '"id": "llm.generate_script"' not in system["content"]  # no worker offers it
    assert "The job's inputs are: photos, transcript, voice_sample." in system["content"]


def test_an_invalid_plan_is_repaired_on_the_second_try(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply(broken_plan()), chat_reply(PLAN))

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert (proposal.source, proposal.attempts) == ("llm", 2)
    assert proposal.graph["edges"] == PLAN["edges"]
    _, second = ollama.requests
    problem = validator_problem(broken_plan())
    assert "'third'" in problem
    assert second["messages"][-2:] == [
        {"role": "assistant", "content": chat_reply(broken_plan()).body["message"]["content"]},
        {"role": "user", "content": reask_message(problem)},
    ]


def test_an_empty_plan_is_sent_back(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply({**PLAN, "nodes": [], "edges": []}), chat_reply(PLAN))

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert (proposal.source, proposal.attempts) == ("llm", 2)
    assert ollama.requests[1]["messages"][-1]["content"] == reask_message(
        "the graph has no nodes: a job needs at least one step"
    )


def test_a_plan_that_never_validates_falls_back_to_a_template_and_says_why(
    ollama: FakeOllama,
) -> None:
    ollama.reply(chat_reply(broken_plan()))

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert len(ollama.requests) == 3
    assert proposal.source == "template"
    assert (proposal.template, proposal.attempts) == ("narrated_video", 3)
    assert proposal.reason == (
        "the LLM (llama3.1:8b) gave no valid graph in 3 attempts: "
        f"{validator_problem(broken_plan())}; using the template "
        f"{load_templates()['narrated_video'].label!r} (narrated_video), though no worker "
        "that is up runs lipsync.sync, llm.generate_script, tts.speak, video.compose, "
        "voice.build_profile"
    )
    assert proposal.graph["metadata"]["template"] == "narrated_video"
    script = next(n for n in proposal.graph["nodes"] if n["id"] == "script")
    assert script["params"]["topic"] == REQUEST
    voice = next(n for n in proposal.graph["nodes"] if n["id"] == "voice_profile")
    assert voice["input"] == {
        "voice_sample": INPUTS["voice_sample"],
        "transcript": INPUTS["transcript"],
    }


def test_a_plan_naming_a_service_no_worker_offers_is_refused_with_the_reason(
    ollama: FakeOllama,
) -> None:
    wants_llm = copy.deepcopy(PLAN)
    wants_llm["nodes"][1]["service"] = "llm.generate_script"
    ollama.reply(chat_reply(wants_llm))

    with pytest.raises(Rejected) as caught:
        propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert (caught.value.status, caught.value.code) == (422, "service_not_offered")
    assert caught.value.message == (
        "the plan of llama3.1:8b needs llm.generate_script, which no worker that is up "
        "offers (after 3 attempts)"
    )
    assert caught.value.details["services"] == ["llm.generate_script"]
    assert len(ollama.requests) == 3
    assert ollama.requests[1]["messages"][-1]["content"] == reask_message(
        "no worker offers llm.generate_script; use only the services listed"
    )


def test_without_an_llm_the_best_matching_template_stands_in(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = None

    proposal = propose(
        "Train my likeness as a LoRA, then render a video of it",
        {"photos": INPUTS["photos"]},
        offered=set(),
        templates=load_templates(),
    )

    assert (proposal.source, proposal.template, proposal.attempts) == (
        "template",
        "train_and_render",
        0,
    )
    assert proposal.reason == (
        "no LLM is configured (MYSPINBOT_LLM_URL); using the template "
        f"{load_templates()['train_and_render'].label!r} (train_and_render), though no "
        "worker that is up runs image.keyframe, lipsync.sync, llm.generate_script, "
        "lora.train, tts.speak, video.animate, video.compose"
    )


def test_an_llm_that_does_not_answer_leaves_the_plan_to_a_template(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = closed_port_url()
    settings.MYSPINBOT_LLM_TIMEOUT = 2.0

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert (proposal.source, proposal.template) == ("template", "narrated_video")
    assert proposal.reason is not None
    assert proposal.reason.startswith(
        f"the LLM (llama3.1:8b) failed: cannot reach the LLM server at {settings.MYSPINBOT_LLM_URL}"
    )


def test_replies_that_never_match_the_schema_fall_back(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply({"steps": ["write", "speak"]}))

    proposal = propose(REQUEST, INPUTS, offered=OFFERED, templates=load_templates())

    assert proposal.source == "template"
    assert (proposal.template, proposal.attempts) == ("narrated_video", 0)
    assert proposal.reason is not None
    assert proposal.reason.startswith(
        "the LLM (llama3.1:8b) failed: llama3.1:8b gave no valid reply in 3 attempt(s): "
        "the reply does not match the JSON schema ("
    )


def test_a_fallback_template_that_lacks_a_job_input_is_refused_with_the_reason(
    settings: Any,
) -> None:
    settings.MYSPINBOT_LLM_URL = None
    templates = {"narrated_video": load_templates()["narrated_video"]}

    with pytest.raises(Rejected) as caught:
        propose(REQUEST, {}, offered=OFFERED, templates=templates)

    refused = caught.value
    assert (refused.status, refused.code) == (422, "invalid_graph")
    assert refused.message.startswith(
        "no LLM is configured (MYSPINBOT_LLM_URL); the best-matching template "
        f"{templates['narrated_video'].label!r} (narrated_video) cannot stand in: invalid graph: "
    )
    assert {issue["rule"] for issue in refused.details["issues"]} == {"missing_input"}
