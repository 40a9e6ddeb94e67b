"""A client for Ollama's chat API (``POST /api/chat``) that asks for JSON of a schema:
used by the script writer (``llm.generate_script``) and the graph planner.

Standard library only. :func:`chat` makes one non-streaming request; :func:`chat_json`
adds parsing, validation and a bounded number of re-asks. Failures are typed by whether
a retry could help:

- connection refused or reset, HTTP 5xx → ``TransientError("llm_unavailable")``;
- no answer within the timeout → ``TransientError("llm_timeout")``;
- HTTP 404, or an ``{"error": "model ... not found"}`` reply →
  ``PermanentError("llm_unknown_model")``;
- any other ``{"error": ...}`` reply, or a reply that is not Ollama's →
  ``PermanentError("llm_error")`` with the server's message;
- no reply that parses and matches the schema after every re-ask →
  ``PermanentError("llm_invalid_output")`` with the last problem in ``details``.
"""

from __future__ import annotations

import http.client
import json
import re
import urllib.error
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from jsonschema import Draft202012Validator

from myspinbot.errors import PermanentError, ServiceError, TransientError

Message = dict[str, str]
# Extra checks on a schema-valid reply: a message for the model, or None when it is fine.
Check = Callable[[dict[str, Any]], str | None]
# ``progress(fraction, message)``, called before and after each request.
Progress = Callable[[float, str], None]

_UNKNOWN_MODEL = re.compile(r"\bmodel\b.*\bnot found\b", re.IGNORECASE | re.DOTALL)
_MAX_ERROR_CHARS = 500


@dataclass(frozen=True)
class ChatReply:
    """One answer: the assistant's text and the tokens the request used."""

    content: str
    prompt_tokens: int
    completion_tokens: int


@dataclass(frozen=True)
class JsonReply:
    """The outcome of :func:`chat_json`.

    ``value`` is the last reply that matched the schema. ``problem`` is what ``check``
    still found wrong with it (None when the model got everything right). ``attempts``
    counts requests; the token counts are summed over all of them.
    """

    value: dict[str, Any]
    problem: str | None
    attempts: int
    prompt_tokens: int
    completion_tokens: int


def chat(
    base_url: str,
    *,
    model: str,
    messages: list[Message],
    schema: dict[str, Any],
    options: dict[str, Any],
    timeout: float,
) -> ChatReply:
    """Send one non-streaming chat request and return the reply.

    ``schema`` is the JSON Schema the reply must follow (Ollama's ``format``);
    ``timeout`` (seconds) bounds connecting and each wait for data. Raises the errors
    listed in the module docstring.
    """
    body = {
        "model": model,
        "messages": messages,
        "stream": False,
        "format": schema,
        "options": options,
    }
    request = urllib.request.Request(
        base_url.rstrip("/") + "/api/chat",
        data=json.dumps(body).encode("utf-8"),
        headers={"Content-Type": "application/json", "Accept": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            raw = response.read()
    except urllib.error.HTTPError as exc:
        raise _http_error(exc.code, _read_quietly(exc), model) from None
    except urllib.error.URLError as exc:
        if isinstance(exc.reason, TimeoutError):
            raise _timeout(base_url, timeout) from None
        raise TransientError(
            "llm_unavailable", f"cannot reach the LLM server at {base_url}: {exc.reason}"
        ) from None
    except TimeoutError:
        raise _timeout(base_url, timeout) from None
    except (OSError, http.client.HTTPException) as exc:
        raise TransientError(
            "llm_unavailable", f"the LLM server at {base_url} dropped the connection: {exc!r}"
        ) from None
    return _parse_reply(raw, model)


def chat_json(
    base_url: str,
    *,
    model: str,
    messages: list[Message],
    schema: dict[str, Any],
    options: dict[str, Any],
    timeout: float,
    max_reasks: int,
    check: Check | None = None,
    progress: Progress | None = None,
) -> JsonReply:
    """Ask until the reply is JSON that matches ``schema`` and passes ``check``.

    After a bad reply, appends it (as the assistant's message) and a user message that
    says exactly what was wrong, then asks again, at most ``max_reasks`` times. When
    every reply fails ``check`` but at least one matched the schema, returns the last
    such reply with its ``problem`` for the caller to repair; when none matched the
    schema, raises ``PermanentError("llm_invalid_output")``.
    """
    validator = Draft202012Validator(schema)
    conversation = list(messages)
    total = 1 + max_reasks
    prompt_tokens = completion_tokens = 0
    usable: tuple[dict[str, Any], str] | None = None
    problem = ""
    content = ""
    for attempt in range(1, total + 1):
        if progress is not None:
            progress((attempt - 1) / total, f"asking {model} (attempt {attempt} of {total})")
        reply = chat(
            base_url,
            model=model,
            messages=conversation,
            schema=schema,
            options=options,
            timeout=timeout,
        )
        prompt_tokens += reply.prompt_tokens
        completion_tokens += reply.completion_tokens
        if progress is not None:
            progress(attempt / total, f"{model} replied (attempt {attempt} of {total})")
        content = reply.content
        value, schema_problem = _parse_json(content, validator)
        if value is None:
            problem = schema_problem
        else:
            check_problem = check(value) if check is not None else None
            if check_problem is None:
                return JsonReply(value, None, attempt, prompt_tokens, completion_tokens)
            problem = check_problem
            usable = (value, check_problem)
        if attempt < total:
            conversation += [
                {"role": "assistant", "content": content},
                {"role": "user", "content": reask_message(problem)},
            ]
    if usable is None:
        raise PermanentError(
            "llm_invalid_output",
            f"{model} gave no valid reply in {total} attempt(s): {problem}",
            details={
                "model": model,
                "attempts": total,
                "problem": problem,
                "last_reply": content[:2000],
            },
        )
    return JsonReply(usable[0], usable[1], total, prompt_tokens, completion_tokens)


def reask_message(problem: str) -> str:
    """The user message that sends a bad reply back to the model."""
    return (
        f"Your previous reply was rejected: {problem}. Reply again with only the JSON "
        "object, following the schema and fixing this problem."
    )


def _parse_json(content: str, validator: Draft202012Validator) -> tuple[Any, str]:
    """Return ``(value, "")`` for a schema-valid reply, else ``(None, problem)``."""
    try:
        value = json.loads(content)
    except ValueError as exc:
        reason = (
            f"{exc.msg} at line {exc.lineno}, column {exc.colno}"
            if isinstance(exc, json.JSONDecodeError)
            else str(exc)
        )
        return None, f"the reply is not valid JSON ({reason})"
    errors = sorted(validator.iter_errors(value), key=lambda error: error.json_path)
    if errors:
        listing = "; ".join(f"{error.json_path}: {error.message}" for error in errors)
        return None, f"the reply does not match the JSON schema ({listing})"
    return value, ""


def _parse_reply(raw: bytes, model: str) -> ChatReply:
    try:
        data = json.loads(raw)
    except ValueError:
        raise PermanentError(
            "llm_error",
            f"the LLM server's reply is not JSON: {_snippet(raw)}",
        ) from None
    if isinstance(data, dict) and "error" in data:
        raise _server_error(str(data["error"]), model, status=200)
    message = data.get("message") if isinstance(data, dict) else None
    content = message.get("content") if isinstance(message, dict) else None
    if not isinstance(content, str):
        raise PermanentError(
            "llm_error",
            f"the LLM server's reply has no message.content: {_snippet(raw)}",
        )
    return ChatReply(
        content=content,
        prompt_tokens=int(data.get("prompt_eval_count") or 0),
        completion_tokens=int(data.get("eval_count") or 0),
    )


def _http_error(status: int, raw: bytes, model: str) -> ServiceError:
    try:
        data = json.loads(raw)
    except ValueError:
        data = None
    text = str(data["error"]) if isinstance(data, dict) and "error" in data else _snippet(raw)
    if status == 404:
        return _unknown_model(text, model, status)
    if status >= 500:
        return TransientError(
            "llm_unavailable",
            f"the LLM server failed (HTTP {status}): {text}",
            details={"status": status},
        )
    return _server_error(text, model, status=status)


def _server_error(text: str, model: str, *, status: int) -> PermanentError:
    if _UNKNOWN_MODEL.search(text):
        return _unknown_model(text, model, status)
    return PermanentError(
        "llm_error", f"the LLM server says: {text}", details={"status": status, "model": model}
    )


def _unknown_model(text: str, model: str, status: int) -> PermanentError:
    return PermanentError(
        "llm_unknown_model",
        f"the LLM server has no model {model!r} (pull it first, or set another model): {text}",
        details={"status": status, "model": model},
    )


def _timeout(base_url: str, timeout: float) -> TransientError:
    return TransientError(
        "llm_timeout", f"the LLM server at {base_url} did not answer within {timeout:g} s"
    )


def _read_quietly(exc: urllib.error.HTTPError) -> bytes:
    try:
        return exc.read()
    except (OSError, http.client.HTTPException):
        return b""


def _snippet(raw: bytes) -> str:
    text = raw.decode("utf-8", errors="replace").strip()
    return text[:_MAX_ERROR_CHARS] or "(empty body)"
