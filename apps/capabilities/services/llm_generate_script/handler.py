"""llm.generate_script: ``{title, stage_prompt, narration}`` from a topic, tone and persona.

Who writes it, in order:

1. ``params.narration`` given → that text as is (``provider: "user"``), no LLM call;
2. setting ``MYSPINBOT_LLM_URL`` set → the Ollama server there (``provider: "ollama"``),
   with re-asks while the reply is not valid JSON of :data:`SCRIPT_SCHEMA` or its
   narration is blank or longer than ``max_words``;
3. otherwise → the deterministic template writer (``provider: "template"``).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from django.conf import settings

from apps.capabilities import ollama
from apps.capabilities.context import NodeContext
from apps.capabilities.services.llm_generate_script import template_writer
from apps.capabilities.services.llm_generate_script.script import (
    SCRIPT_SCHEMA,
    count_words,
    derive_title,
    script_problem,
    truncate_words,
    word_floor,
)
from myspinbot.errors import PermanentError

# The params' defaults, from the declaration so they are written down once.
DEFAULTS: dict[str, Any] = {
    name: spec["default"]
    for name, spec in json.loads(
        (Path(__file__).with_name("capability.json")).read_text(encoding="utf-8")
    )["params"]["properties"].items()
    if "default" in spec
}

SYSTEM_PROMPT = """\
You write the script of a short narrated video. The presenter is {persona}; write in \
their voice, in a {tone} tone.
Reply with only a JSON object with exactly these keys:
- "title": a short, catchy title for the video (at most 10 words);
- "stage_prompt": one or two sentences describing the scene for an image generator: \
the presenter, their look and the setting, related to the topic;
- "narration": what the presenter says, as plain spoken sentences, about {max_words} \
words and at most {max_words} words in total, with no stage directions, headings, lists or \
emoji."""


def run(ctx: NodeContext) -> dict[str, Any]:
    """Write the script and store it as the artifact ``script.json``.

    Returns ``{title, stage_prompt, narration, word_count, provider, model, tokens,
    attempts, truncated, script}``: ``model`` and ``tokens`` (``{prompt, completion}``,
    summed over requests) are None unless Ollama wrote it; ``attempts`` counts LLM
    requests (0 without one); ``truncated`` says that the model's narration was still
    too long after every re-ask and was cut at a sentence boundary; ``script`` is the
    artifact reference. Raises the errors of :mod:`apps.capabilities.ollama` when Ollama fails.
    """
    params = {**DEFAULTS, **ctx.params}
    if "narration" in params:
        output = _user_script(params)
    elif settings.MYSPINBOT_LLM_URL:
        output = _ollama_script(ctx, params, settings.MYSPINBOT_LLM_URL)
    else:
        output = _template_script(params)
    output["word_budget"] = word_budget(params, output["word_count"], output["provider"])
    data = json.dumps(output, ensure_ascii=False, indent=2, sort_keys=True).encode("utf-8")
    output["script"] = ctx.artifacts.save("script.json", data, "application/json")
    ctx.progress(1.0, f"script written by {output['provider']} ({output['word_count']} words)")
    return output


def _user_script(params: dict[str, Any]) -> dict[str, Any]:
    narration = params["narration"]
    title = derive_title(params.get("topic") or narration)
    stage_prompt = template_writer.stage_prompt(
        topic=params.get("topic") or title, tone=params["tone"], persona=params["persona"]
    )
    return _output(title, stage_prompt, narration, provider="user")


def _template_script(params: dict[str, Any]) -> dict[str, Any]:
    script = template_writer.write(
        topic=params["topic"],
        tone=params["tone"],
        persona=params["persona"],
        max_words=params["max_words"],
        min_words=word_floor(params["max_words"], params["word_tolerance"]),
    )
    return _output(script["title"], script["stage_prompt"], script["narration"], "template")


def word_budget(params: dict[str, Any], words: int, provider: str) -> dict[str, Any]:
    """``{min, max, met, why}`` for a narration of ``words`` words by ``provider``."""
    low, high = word_floor(params["max_words"], params["word_tolerance"]), params["max_words"]
    met = low <= words <= high
    why = None
    if not met and provider == "user":
        why = "the narration was given in the params and is used as is"
    elif not met and provider == "template":
        why = (
            f"the template writer (no LLM configured: MYSPINBOT_LLM_URL) has only {words} "
            f"words for this tone, fewer than the {low} asked for"
        )
    elif not met:
        why = f"the model wrote {words} words, fewer than the {low} asked for"
    return {"min": low, "max": high, "met": met, "why": why}


def _ollama_script(ctx: NodeContext, params: dict[str, Any], url: str) -> dict[str, Any]:
    model = params.get("model") or settings.MYSPINBOT_LLM_MODEL
    max_words = params["max_words"]
    options: dict[str, Any] = {"temperature": params["temperature"]}
    if "seed" in params:
        options["seed"] = params["seed"]
    system = SYSTEM_PROMPT.format(
        persona=" ".join(params["persona"].split()), tone=params["tone"], max_words=max_words
    )
    reply = ollama.chat_json(
        url,
        model=model,
        messages=[
            {"role": "system", "content": system},
            {"role": "user", "content": f"Topic: {params['topic'].strip()}"},
        ],
        schema=SCRIPT_SCHEMA,
        options=options,
        timeout=float(settings.MYSPINBOT_LLM_TIMEOUT),
        max_reasks=int(settings.MYSPINBOT_LLM_MAX_REASKS),
        check=lambda script: script_problem(script, max_words),
        # Leave the last step of the bar for storing the script.
        progress=lambda fraction, message: ctx.progress(0.95 * fraction, message),
    )
    script = {key: value.strip() for key, value in reply.value.items()}
    truncated = reply.problem is not None
    if truncated:
        # Every re-ask is used up. A narration that is only too long is cut; anything
        # else (a blank or over-long field) cannot be repaired here.
        script["narration"] = truncate_words(script["narration"], max_words)
        if script_problem(script, max_words) is not None:
            raise PermanentError(
                "llm_invalid_output",
                f"{model} gave no valid reply in {reply.attempts} attempt(s): {reply.problem}",
                details={"model": model, "attempts": reply.attempts, "problem": reply.problem},
            )
    return _output(
        script["title"],
        script["stage_prompt"],
        script["narration"],
        provider="ollama",
        model=model,
        tokens={"prompt": reply.prompt_tokens, "completion": reply.completion_tokens},
        attempts=reply.attempts,
        truncated=truncated,
    )


def _output(
    title: str,
    stage_prompt: str,
    narration: str,
    provider: str,
    *,
    model: str | None = None,
    tokens: dict[str, int] | None = None,
    attempts: int = 0,
    truncated: bool = False,
) -> dict[str, Any]:
    return {
        "title": title,
        "stage_prompt": stage_prompt,
        "narration": narration,
        "word_count": count_words(narration),
        "provider": provider,
        "model": model,
        "tokens": tokens,
        "attempts": attempts,
        "truncated": truncated,
    }
