from __future__ import annotations

import json
from typing import Any

import pytest

from apps.capabilities.ollama import reask_message
from apps.capabilities.registry import get_registry
from apps.capabilities.services.llm_generate_script import handler, template_writer
from apps.capabilities.services.llm_generate_script.script import (
    SCRIPT_SCHEMA,
    count_words,
    truncate_words,
    word_floor,
)
from myspinbot.errors import Cancelled, PermanentError, TransientError
from testkit.contexts import ServiceRun, make_service_run
from tests.support.ollama import Answer, FakeOllama, chat_reply, closed_port_url, error_reply

SERVICE = "llm.generate_script"
SCRIPT = {
    "title": "Why Cats Purr",
    "stage_prompt": "A cheerful presenter in a cosy living room with a sleeping cat.",
    "narration": "Cats purr when they are happy. They also purr to calm themselves down.",
}


@pytest.fixture
def no_llm(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = None


def run_service(params: dict[str, Any]) -> tuple[dict[str, Any], ServiceRun]:
    run = make_service_run(SERVICE, params)
    return handler.run(run.context), run


def words(n: int) -> str:
    """``n`` words in sentences of five words each."""
    sentences = ["One two three four five."] * (n // 5)
    return " ".join(sentences)


# --- declaration -------------------------------------------------------------------


def test_declaration_is_registered() -> None:
    capability = get_registry().get(SERVICE)

    assert capability.queue == "cpu"
    assert capability.version == "1"
    assert capability.cacheable is True
    assert capability.idempotent is True
    assert capability.max_attempts == 3
    assert capability.timeout_seconds == 600
    assert capability.handler == "apps.capabilities.services.llm_generate_script.handler:run"


def test_params_schema_accepts_good_params() -> None:
    capability = get_registry().get(SERVICE)

    assert capability.validate_params({"topic": "cats"}) == []
    assert capability.validate_params({"narration": "Hello there."}) == []
    assert (
        capability.validate_params(
            {
                "topic": "cats",
                "tone": "dramatic",
                "persona": "a pirate",
                "max_words": 10,
                "temperature": 0,
                "seed": 7,
                "model": "qwen2.5:0.5b",
            }
        )
        == []
    )


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"topic": "cats", "max_words": 5}, "$.max_words: 5 is less than the minimum of 10"),
        (
            {"topic": "cats", "max_words": 1001},
            "$.max_words: 1001 is greater than the maximum of 1000",
        ),
        ({}, "$: 'topic' is a required property"),
        ({"topic": "  "}, "$.topic: '  ' does not match '\\\\S'"),
        ({"topic": "x" * 501}, f"$.topic: '{'x' * 501}' is too long"),
        (
            {"topic": "cats", "tone": "sarcastic"},
            "$.tone: 'sarcastic' is not one of ['friendly', 'serious', 'playful', 'dramatic']",
        ),
        ({"topic": "cats", "temperature": 3}, "$.temperature: 3 is greater than the maximum of 2"),
        ({"topic": "cats", "seed": 1.5}, "$.seed: 1.5 is not of type 'integer'"),
        (
            {"topic": "cats", "colour": "red"},
            "$: Additional properties are not allowed ('colour' was unexpected)",
        ),
    ],
)
def test_params_schema_rejects_bad_params(params: dict[str, Any], error: str) -> None:
    assert get_registry().get(SERVICE).validate_params(params) == [error]


def test_defaults_come_from_the_declaration() -> None:
    assert handler.DEFAULTS == {
        "tone": "friendly",
        "persona": "a friendly presenter",
        "max_words": 120,
        "word_tolerance": 0.2,
        "temperature": 0.7,
    }


# --- Ollama: the happy path ----------------------------------------------------------


@pytest.mark.django_db
def test_ollama_writes_the_script(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply(SCRIPT, prompt_eval_count=42, eval_count=17))

    params = {"topic": "why cats purr", "tone": "playful", "persona": "a vet"}
    output, run = run_service({**params, "seed": 7, "temperature": 0.2, "max_words": 50})

    assert {key: output[key] for key in SCRIPT} == SCRIPT
    assert output["word_count"] == 13
    assert output["provider"] == "ollama"
    assert output["model"] == "llama3.1:8b"
    assert output["tokens"] == {"prompt": 42, "completion": 17}
    assert output["attempts"] == 1
    assert output["truncated"] is False
    assert ollama.paths == ["/api/chat"]
    [body] = ollama.requests
    assert body["model"] == "llama3.1:8b"
    assert body["stream"] is False
    assert body["format"] == SCRIPT_SCHEMA
    assert body["options"] == {"temperature": 0.2, "seed": 7}
    system, user = body["messages"]
    assert system["role"] == "system"
    assert "a vet" in system["content"]
    assert "playful" in system["content"]
    assert "at most 50 words" in system["content"]
    assert user == {"role": "user", "content": "Topic: why cats purr"}
    stored = json.loads(run.read(output["script"]))
    assert stored == {key: value for key, value in output.items() if key != "script"}
    assert output["script"]["content_type"] == "application/json"


@pytest.mark.django_db
def test_ollama_request_without_seed_and_with_model_param(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply(SCRIPT))

    output, _ = run_service({"topic": "cats", "model": "qwen2.5:0.5b"})

    assert output["model"] == "qwen2.5:0.5b"
    assert ollama.requests[0]["model"] == "qwen2.5:0.5b"
    assert ollama.requests[0]["options"] == {"temperature": 0.7}


@pytest.mark.django_db
def test_ollama_progress_is_reported_around_each_request(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply("not json"), chat_reply(SCRIPT))

    _, run = run_service({"topic": "cats"})

    assert run.progress.reports == [
        (0.0, "asking llama3.1:8b (attempt 1 of 3)"),
        (pytest.approx(0.95 / 3), "llama3.1:8b replied (attempt 1 of 3)"),
        (pytest.approx(0.95 / 3), "asking llama3.1:8b (attempt 2 of 3)"),
        (pytest.approx(0.95 * 2 / 3), "llama3.1:8b replied (attempt 2 of 3)"),
        (1.0, "script written by ollama (13 words)"),
    ]


@pytest.mark.django_db
def test_cancelled_job_stops_before_asking(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply(SCRIPT))
    run = make_service_run(SERVICE, {"topic": "cats"})
    run.progress.cancel = True

    with pytest.raises(Cancelled):
        handler.run(run.context)

    assert ollama.requests == []
    assert run.progress.reports == [(0.0, "asking llama3.1:8b (attempt 1 of 3)")]


# --- Ollama: re-asks ------------------------------------------------------------------


@pytest.mark.django_db
def test_invalid_json_is_reasked_with_the_reason(ollama: FakeOllama) -> None:
    ollama.reply(
        chat_reply('{"title": "Cats"', prompt_eval_count=10, eval_count=5),
        chat_reply(SCRIPT, prompt_eval_count=20, eval_count=30),
    )

    output, _ = run_service({"topic": "cats"})

    assert output["attempts"] == 2
    assert output["tokens"] == {"prompt": 30, "completion": 35}
    assert output["narration"] == SCRIPT["narration"]
    first, second = ollama.requests
    assert second["messages"][:2] == first["messages"]
    assert second["messages"][2:] == [
        {"role": "assistant", "content": '{"title": "Cats"'},
        {
            "role": "user",
            "content": reask_message(
                "the reply is not valid JSON (Expecting ',' delimiter at line 1, column 17)"
            ),
        },
    ]


@pytest.mark.django_db
def test_schema_mismatch_is_reasked_with_the_reason(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply({"title": "Cats", "narration": "Hi."}), chat_reply(SCRIPT))

    output, _ = run_service({"topic": "cats"})

    assert output["attempts"] == 2
    assert ollama.requests[1]["messages"][-1]["content"] == reask_message(
        "the reply does not match the JSON schema ($: 'stage_prompt' is a required property)"
    )


@pytest.mark.django_db
def test_always_invalid_fails_after_every_reask(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply("I'd love to write about cats!"))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_invalid_output"
    assert caught.value.retryable is False
    assert len(ollama.requests) == 3
    assert [len(body["messages"]) for body in ollama.requests] == [2, 4, 6]
    assert caught.value.details == {
        "model": "llama3.1:8b",
        "attempts": 3,
        "problem": "the reply is not valid JSON (Expecting value at line 1, column 1)",
        "last_reply": "I'd love to write about cats!",
    }


@pytest.mark.django_db
def test_max_reasks_setting_bounds_the_requests(ollama: FakeOllama, settings: Any) -> None:
    settings.MYSPINBOT_LLM_MAX_REASKS = 0
    ollama.reply(chat_reply("nope"))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_invalid_output"
    assert len(ollama.requests) == 1


@pytest.mark.django_db
def test_blank_narration_is_invalid(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply({**SCRIPT, "narration": "   "}))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_invalid_output"
    assert caught.value.details["problem"] == '"narration" is blank; it must contain text'
    assert len(ollama.requests) == 3


@pytest.mark.django_db
def test_overlong_narration_is_reasked_then_accepted(ollama: FakeOllama) -> None:
    ollama.reply(
        chat_reply({**SCRIPT, "narration": words(30)}),
        chat_reply({**SCRIPT, "narration": words(20)}),
    )

    output, _ = run_service({"topic": "cats", "max_words": 20})

    assert output["attempts"] == 2
    assert output["word_count"] == 20
    assert output["truncated"] is False
    assert ollama.requests[1]["messages"][-1]["content"] == reask_message(
        '"narration" has 30 words; it must have at most 20 words'
    )


@pytest.mark.django_db
def test_overlong_narration_is_truncated_after_the_reasks(ollama: FakeOllama) -> None:
    narration = "First sentence has five words. " * 4 + "This one pushes it over the limit."
    ollama.reply(chat_reply({**SCRIPT, "narration": narration}))

    output, run = run_service({"topic": "cats", "max_words": 22})

    assert len(ollama.requests) == 3
    assert output["attempts"] == 3
    assert output["truncated"] is True
    assert output["narration"] == " ".join(["First sentence has five words."] * 4)
    assert output["word_count"] == 20
    assert json.loads(run.read(output["script"]))["truncated"] is True


@pytest.mark.django_db
def test_overlong_title_after_the_reasks_is_invalid(ollama: FakeOllama) -> None:
    ollama.reply(chat_reply({**SCRIPT, "title": "T" * 201}))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_invalid_output"
    assert caught.value.details["problem"] == (
        '"title" has 201 characters; it must have at most 200'
    )


# --- Ollama: errors -------------------------------------------------------------------


@pytest.mark.django_db
def test_unknown_model_is_a_permanent_error(ollama: FakeOllama) -> None:
    ollama.reply(error_reply('model "nope" not found, try pulling it first', status=404))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats", "model": "nope"})

    assert caught.value.code == "llm_unknown_model"
    assert caught.value.retryable is False
    assert caught.value.message == (
        "the LLM server has no model 'nope' (pull it first, or set another model): "
        'model "nope" not found, try pulling it first'
    )
    assert caught.value.details == {"status": 404, "model": "nope"}
    assert len(ollama.requests) == 1


@pytest.mark.django_db
def test_server_error_is_transient(ollama: FakeOllama) -> None:
    ollama.reply(error_reply("something", status=500))

    with pytest.raises(TransientError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_unavailable"
    assert caught.value.retryable is True
    assert caught.value.message == "the LLM server failed (HTTP 500): something"
    assert len(ollama.requests) == 1


@pytest.mark.django_db
def test_client_error_reply_is_a_permanent_llm_error(ollama: FakeOllama) -> None:
    ollama.reply(error_reply("invalid options: seed", status=400))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_error"
    assert caught.value.message == "the LLM server says: invalid options: seed"


@pytest.mark.django_db
def test_error_in_a_200_reply_is_a_permanent_llm_error(ollama: FakeOllama) -> None:
    ollama.reply(Answer({"error": "something"}))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_error"
    assert caught.value.message == "the LLM server says: something"


@pytest.mark.django_db
def test_reply_that_is_not_ollamas_is_a_permanent_llm_error(ollama: FakeOllama) -> None:
    ollama.reply(Answer(b"<html>proxy login</html>"))

    with pytest.raises(PermanentError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_error"
    assert caught.value.message == "the LLM server's reply is not JSON: <html>proxy login</html>"


@pytest.mark.django_db
def test_slow_server_times_out(ollama: FakeOllama, settings: Any) -> None:
    settings.MYSPINBOT_LLM_TIMEOUT = 0.5
    ollama.reply(chat_reply(SCRIPT, delay=3.0))

    with pytest.raises(TransientError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_timeout"
    assert caught.value.message == f"the LLM server at {ollama.url} did not answer within 0.5 s"


@pytest.mark.django_db
def test_closed_port_is_unavailable(settings: Any) -> None:
    settings.MYSPINBOT_LLM_URL = closed_port_url()

    with pytest.raises(TransientError) as caught:
        run_service({"topic": "cats"})

    assert caught.value.code == "llm_unavailable"
    assert caught.value.message.startswith(
        f"cannot reach the LLM server at {settings.MYSPINBOT_LLM_URL}: "
    )
    assert "Connection refused" in caught.value.message


# --- template writer and user narration ---------------------------------------------


@pytest.mark.django_db
@pytest.mark.usefixtures("no_llm")
def test_template_writer_without_llm() -> None:
    output, run = run_service({"topic": "why cats purr", "persona": "a vet", "max_words": 40})

    assert output["provider"] == "template"
    assert output["model"] is None
    assert output["tokens"] is None
    assert output["attempts"] == 0
    assert output["truncated"] is False
    assert output["title"] == "A Friendly Look at Why cats purr"
    assert output["stage_prompt"].startswith("A vet presenting why cats purr to the camera, ")
    assert output["narration"].startswith(
        "Hi there! I'm a vet, and today we're talking about why cats purr."
    )
    assert output["word_count"] == count_words(output["narration"])
    assert 10 <= output["word_count"] <= 40
    assert json.loads(run.read(output["script"]))["provider"] == "template"


@pytest.mark.parametrize("tone", ["friendly", "serious", "playful", "dramatic"])
@pytest.mark.parametrize("max_words", [10, 23, 120, 1000])
def test_template_writer_is_deterministic_and_bounded(tone: str, max_words: int) -> None:
    params: dict[str, Any] = {"topic": "the history of tea", "persona": "a historian"}

    first = template_writer.write(**params, tone=tone, max_words=max_words)
    second = template_writer.write(**params, tone=tone, max_words=max_words)

    assert first == second
    assert all(value.strip() for value in first.values())
    assert 1 <= count_words(first["narration"]) <= max_words
    assert "the history of tea" in first["stage_prompt"]
    assert "historian" in first["stage_prompt"]


def test_template_writer_shortens_a_long_topic_in_title_and_stage_prompt() -> None:
    topic = "word " * 100

    script = template_writer.write(
        topic=topic, tone="serious", persona="p", max_words=10, min_words=8
    )

    assert len(script["title"]) <= 100
    assert len(script["stage_prompt"]) <= 300
    assert 8 <= count_words(script["narration"]) <= 10
    # the 100-word first sentence is cut to the words left, in its place
    assert script["narration"].startswith("I'm p, and… ")
    assert "…" in script["narration"]


@pytest.mark.parametrize("tone", ["friendly", "serious", "playful", "dramatic"])
def test_template_writer_meets_a_small_word_budget(tone: str) -> None:
    # 14 words asked for used to give "Hi there!": the next sentence did not fit.
    script = template_writer.write(
        topic="why otters hold hands",
        tone=tone,
        persona="a friendly presenter",
        max_words=14,
        min_words=word_floor(14, 0.2),
    )

    assert word_floor(14, 0.2) == 12
    assert 12 <= count_words(script["narration"]) <= 14


@pytest.mark.django_db
@pytest.mark.usefixtures("no_llm")
def test_the_word_budget_is_reported_and_says_why_when_it_is_not_met() -> None:
    met, _ = run_service({"topic": "why otters hold hands", "max_words": 14})
    short, _ = run_service({"topic": "why otters hold hands", "max_words": 300})
    given, _ = run_service({"narration": "Hello there.", "max_words": 50})

    assert met["word_budget"] == {"min": 12, "max": 14, "met": True, "why": None}
    assert 12 <= met["word_count"] <= 14
    assert short["word_budget"]["met"] is False
    assert short["word_budget"]["min"] == 240
    assert "template writer" in short["word_budget"]["why"]
    assert str(short["word_count"]) in short["word_budget"]["why"]
    assert given["word_budget"]["met"] is False
    assert "given in the params" in given["word_budget"]["why"]


@pytest.mark.django_db
def test_user_narration_is_used_as_is(ollama: FakeOllama) -> None:
    narration = "Welcome to my kitchen! Today we bake bread together, step by step."

    output, run = run_service({"narration": narration, "tone": "playful"})

    assert output["provider"] == "user"
    assert output["narration"] == narration
    assert output["title"] == "Welcome to my kitchen"
    assert output["stage_prompt"].startswith(
        "A friendly presenter presenting Welcome to my kitchen"
    )
    assert output["word_count"] == 12
    assert output["model"] is None
    assert output["tokens"] is None
    assert output["attempts"] == 0
    assert ollama.requests == []
    assert json.loads(run.read(output["script"]))["narration"] == narration


@pytest.mark.django_db
@pytest.mark.usefixtures("no_llm")
def test_user_narration_with_a_topic_takes_its_title_from_the_topic() -> None:
    output, _ = run_service({"topic": "bread baking at home", "narration": "Let's bake."})

    assert output["title"] == "Bread baking at home"
    assert output["narration"] == "Let's bake."


# --- narration helpers ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "max_words", "expected"),
    [
        ("One two. Three four five. Six.", 5, "One two. Three four five."),
        ("One two. Three four five. Six.", 6, "One two. Three four five. Six."),
        ("One two three four five six.", 3, "One two three…"),
        ("Really?  Yes!\nReally. Done", 3, "Really? Yes! Really."),
        ("   ", 10, ""),
    ],
)
def test_truncate_words(text: str, max_words: int, expected: str) -> None:
    assert truncate_words(text, max_words) == expected
