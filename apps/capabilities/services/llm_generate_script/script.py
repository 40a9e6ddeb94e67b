"""What a script is: its JSON Schema, and how its narration is measured and cut."""

from __future__ import annotations

import math
import re
from typing import Any

# The JSON Schema an LLM's reply must match (Ollama's ``format``). Word limits and
# blank strings are checked separately (:func:`script_problem`): JSON Schema cannot
# count words, and regex patterns are not reliably turned into sampling grammars.
SCRIPT_SCHEMA: dict[str, Any] = {
    "type": "object",
    "additionalProperties": False,
    "required": ["title", "stage_prompt", "narration"],
    "properties": {
        "title": {"type": "string", "minLength": 1},
        "stage_prompt": {"type": "string", "minLength": 1},
        "narration": {"type": "string", "minLength": 1},
    },
}

MAX_TITLE_CHARS = 200
MAX_STAGE_PROMPT_CHARS = 1000
TITLE_WORDS = 8

_SENTENCE_END = re.compile(r"(?<=[.!?…])[\"'”’)\]]*\s+")


def count_words(text: str) -> int:
    """Words in ``text``: runs of non-whitespace."""
    return len(text.split())


def sentences(text: str) -> list[str]:
    """Split ``text`` after each ``.``, ``!``, ``?`` or ``…`` that whitespace follows."""
    return [part.strip() for part in _SENTENCE_END.split(text.strip()) if part.strip()]


def truncate_words(text: str, max_words: int) -> str:
    """Cut ``text`` to at most ``max_words`` words, at a sentence boundary when it can.

    Keeps the longest run of whole leading sentences that fits. When even the first
    sentence is longer, keeps its first ``max_words`` words and ends them with ``…``.
    Whitespace inside the kept sentences is normalised to single spaces; text without
    words stays empty.
    """
    kept: list[str] = []
    used = 0
    for sentence in sentences(text):
        words = sentence.split()
        if used + len(words) > max_words:
            break
        kept.append(" ".join(words))
        used += len(words)
    if kept:
        return " ".join(kept)
    words = text.split()[:max_words]
    if not words:
        return ""
    return " ".join(words).rstrip(",;:-–—") + "…"


def word_floor(max_words: int, tolerance: float) -> int:
    """The fewest words a narration for ``max_words`` should have: ``max_words x (1 -
    tolerance)``, rounded up (the ``word_tolerance`` param)."""
    return math.ceil(max_words * (1 - tolerance) - 1e-9)


def fit_words(text: str, min_words: int, max_words: int) -> str:
    """Whole sentences of ``text`` in order, as many words as fit in ``max_words``: a
    sentence that would overflow is passed over for a later, shorter one. When that stays
    under ``min_words``, the first sentence passed over is put back in its place, cut to
    the words left and ended with ``…``. At most ``max_words`` words; at least
    ``min_words`` unless ``text`` has fewer."""
    kept: dict[int, str] = {}
    skipped: list[int] = []
    used = 0
    parts = [sentence.split() for sentence in sentences(text)]
    for index, words in enumerate(parts):
        if used + len(words) > max_words:
            skipped.append(index)
            continue
        kept[index] = " ".join(words)
        used += len(words)
    if used < min_words and skipped:
        cut = parts[skipped[0]][: max_words - used]
        kept[skipped[0]] = " ".join(cut).rstrip(",;:-–—.!?") + "…"
    return " ".join(kept[index] for index in sorted(kept))


def derive_title(text: str) -> str:
    """A title from the first sentence of ``text``: at most 8 words, no end punctuation."""
    first = sentences(text)[0] if text.strip() else ""
    words = first.split()
    title = " ".join(words[:TITLE_WORDS]).rstrip(".!?…,;:-–—")
    if len(words) > TITLE_WORDS:
        title += "…"
    return title[:1].upper() + title[1:]


def script_problem(script: dict[str, Any], max_words: int) -> str | None:
    """Say what is wrong with a schema-valid ``script`` for ``max_words``; None if nothing.

    The message is addressed to the model, which gets it back when it is re-asked.
    """
    for key in ("title", "stage_prompt", "narration"):
        if not script[key].strip():
            return f'"{key}" is blank; it must contain text'
    if len(script["title"]) > MAX_TITLE_CHARS:
        return (
            f'"title" has {len(script["title"])} characters; it must have at most {MAX_TITLE_CHARS}'
        )
    if len(script["stage_prompt"]) > MAX_STAGE_PROMPT_CHARS:
        return (
            f'"stage_prompt" has {len(script["stage_prompt"])} characters; '
            f"it must have at most {MAX_STAGE_PROMPT_CHARS}"
        )
    words = count_words(script["narration"])
    if words > max_words:
        return f'"narration" has {words} words; it must have at most {max_words} words'
    return None
