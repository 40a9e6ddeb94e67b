"""Captions timed by the speech itself: the narration's words, force-aligned to its audio
(:mod:`apps.capabilities.media.speech_timing`), grouped into short lines that appear as
their first word is spoken and go when their last word ends.

The text keeps its own spelling and punctuation: each word of the text takes the times of
the aligned dictionary words it is made of; words the dictionary does not know take the
time between their neighbours.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, TypeGuard

from apps.capabilities.media.speech_timing import Word, normalise_words
from apps.capabilities.media.video import Cue

# A caption line holds at most this many characters (the common subtitle limit).
MAX_CHARS = 42
# A line also ends at a pause this long (s) between two words, and after a sentence or a
# clause ends (a comma ends a line only once it holds this many characters).
PAUSE_BREAK = 0.3
COMMA_BREAK_CHARS = 20
# A line stays this long (s) after its last word ends, unless the next line starts first.
HOLD = 0.2
# Fewer of the text's words than this share found in the alignment: the times are not
# trusted, and the sentence cues stay.
MIN_MATCHED = 0.6

_SENTENCE_END = re.compile(r"[.!?;:…]['\")\]]*$")
_CLAUSE_END = re.compile(r"[,—–-]['\")\]]*$")


@dataclass(frozen=True)
class TimedToken:
    """A word of the text as written, and when it is spoken."""

    text: str
    start: float
    end: float


def parse_words(raw: object) -> list[Word] | None:
    """Aligned words ``[{"text", "start", "end"}]`` from a predecessor's output, in time
    order, or ``None`` when absent or malformed (then the narration is aligned again)."""
    if not isinstance(raw, list) or not raw:
        return None
    words: list[Word] = []
    for item in raw:
        if not isinstance(item, dict):
            return None
        text, start, end = item.get("text"), item.get("start"), item.get("end")
        if not isinstance(text, str) or not _is_time(start) or not _is_time(end):
            return None
        start, end = float(start), float(end)
        if not 0 <= start <= end < float("inf"):
            return None
        words.append(Word(text, start, end))
    return sorted(words, key=lambda word: word.start)


def _is_time(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def timed_tokens(text: str, words: Sequence[Word]) -> list[TimedToken] | None:
    """Each whitespace-separated word of ``text`` with its times from ``words`` (aligned
    in order), or ``None`` when under :data:`MIN_MATCHED` of them are found."""
    tokens = text.split()
    times: list[tuple[float | None, float | None]] = []
    cursor = 0
    matched = 0
    for token in tokens:
        start: float | None = None
        end: float | None = None
        for spoken in normalise_words(token):
            # The aligner leaves out words it does not know: look a few words ahead.
            for ahead in range(cursor, min(cursor + 3, len(words))):
                if words[ahead].text == spoken:
                    start = words[ahead].start if start is None else start
                    end = words[ahead].end
                    cursor = ahead + 1
                    break
        if start is not None:
            matched += 1
        times.append((start, end))
    spoken_tokens = sum(1 for token in tokens if normalise_words(token))
    if not tokens or matched < MIN_MATCHED * max(1, spoken_tokens):
        return None
    # Unmatched tokens sit between their neighbours' times.
    result: list[TimedToken] = []
    for index, (token, (start, end)) in enumerate(zip(tokens, times, strict=True)):
        if start is None or end is None:
            before = next((t[1] for t in reversed(times[:index]) if t[1] is not None), None)
            after = next((t[0] for t in times[index + 1 :] if t[0] is not None), None)
            start = before if before is not None else (after if after is not None else 0.0)
            end = after if after is not None else start
            end = max(end, start)
        result.append(TimedToken(token, start, end))
    return result


def lines(tokens: Sequence[TimedToken]) -> list[Cue]:
    """Caption lines of at most :data:`MAX_CHARS`, broken at pauses, sentence and clause
    ends; each shown from its first word's start to its last word's end plus
    :data:`HOLD` (cut at the next line's start)."""
    groups: list[list[TimedToken]] = []
    for token in tokens:
        if groups:
            current = groups[-1]
            previous = current[-1]
            length = len(" ".join(t.text for t in current))
            if (
                length + 1 + len(token.text) > MAX_CHARS
                or token.start - previous.end >= PAUSE_BREAK
                or _SENTENCE_END.search(previous.text)
                or (_CLAUSE_END.search(previous.text) and length >= COMMA_BREAK_CHARS)
            ):
                groups.append([token])
                continue
            current.append(token)
        else:
            groups.append([token])
    cues: list[Cue] = []
    for index, group in enumerate(groups):
        start, end = group[0].start, group[-1].end + HOLD
        if index + 1 < len(groups):
            end = min(end, groups[index + 1][0].start)
        cues.append(Cue(start, max(end, start), " ".join(t.text for t in group)))
    return cues


def word_cues(text: str, words: Sequence[Word]) -> list[Cue] | None:
    """Caption lines of ``text`` timed by its aligned ``words``, or ``None`` when the
    alignment does not cover enough of the text."""
    tokens = timed_tokens(text, words)
    return None if tokens is None else lines(tokens)


def as_json(cues: Sequence[Cue]) -> list[dict[str, Any]]:
    """The cues as the node's output gives them (seconds to the millisecond)."""
    return [
        {"start": round(cue.start, 3), "end": round(cue.end, 3), "text": cue.text} for cue in cues
    ]
