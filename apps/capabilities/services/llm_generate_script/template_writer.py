"""The deterministic script writer used when no LLM is configured.

Same params, same script: no randomness, no clock. The text is plainly a template (a
few sentences per tone around the topic); it keeps a pipeline usable end to end
without a language model, and the handler labels it ``provider: "template"``.
"""

from __future__ import annotations

from apps.capabilities.services.llm_generate_script.script import fit_words

TITLE_TOPIC_CHARS = 60
STAGE_TOPIC_CHARS = 120

_TITLES = {
    "friendly": "A Friendly Look at {topic}",
    "serious": "{topic}: What You Need to Know",
    "playful": "{topic}, But Make It Fun",
    "dramatic": "The Untold Story of {topic}",
}

_LOOKS = {
    "friendly": "warm smile, bright and colourful background, soft daylight",
    "serious": "calm and focused expression, muted neutral background, even studio light",
    "playful": "playful grin, vivid saturated colours, fun props in the background",
    "dramatic": "intense expression, dark moody background, cinematic rim lighting",
}

_NARRATIONS = {
    "friendly": [
        "Hi there! I'm {persona}, and today we're talking about {topic}.",
        "It's something a lot of people are curious about, so let's take a closer look.",
        "The best way to understand {topic} is to start with the basics and build from there.",
        "Once you see how the pieces fit together, it all starts to make sense.",
        "Keep an eye out for it in everyday life; you'll be surprised how often it shows up.",
        "Thanks for watching, and see you next time!",
    ],
    "serious": [
        "I'm {persona}, and this is what you need to know about {topic}.",
        "It matters more than most people realise.",
        "To understand {topic}, we have to look at the facts carefully.",
        "The details shape the outcome, and they deserve our attention.",
        "Take the time to learn more and to form your own view.",
        "Thank you for your attention.",
    ],
    "playful": [
        "Hey, it's {persona}, and guess what? Today it's all about {topic}!",
        "Buckle up, because this is going to be fun.",
        "Here's the twist: {topic} is way more interesting than it sounds.",
        "Once you get into it, you won't want to stop.",
        "Try spotting it yourself today and see how many times you can find it.",
        "That's it from me, see you next time!",
    ],
    "dramatic": [
        "I am {persona}, and this is the story of {topic}.",
        "Few people know what lies beneath the surface.",
        "Behind {topic} is a tale of ambition, risk and discovery.",
        "Every step forward came at a price.",
        "And the story is far from over.",
        "Remember what you heard here today.",
    ],
}


def write(
    *, topic: str, tone: str, persona: str, max_words: int, min_words: int = 0
) -> dict[str, str]:
    """Return ``{title, stage_prompt, narration}``; the narration has at most ``max_words``
    words, and at least ``min_words`` unless the template has fewer (:func:`.fit_words`)."""
    topic = " ".join(topic.split())
    persona = " ".join(persona.split())
    title = _TITLES[tone].format(topic=_capitalise(_shorten(topic, TITLE_TOPIC_CHARS)))
    text = " ".join(sentence.format(topic=topic, persona=persona) for sentence in _NARRATIONS[tone])
    return {
        "title": title,
        "stage_prompt": stage_prompt(topic=topic, tone=tone, persona=persona),
        "narration": fit_words(text, min_words, max_words),
    }


def stage_prompt(*, topic: str, tone: str, persona: str) -> str:
    """A short scene description for image generation: the persona presenting the topic."""
    return (
        f"{_capitalise(' '.join(persona.split()))} presenting "
        f"{_shorten(' '.join(topic.split()), STAGE_TOPIC_CHARS)} to the camera, "
        f"{_LOOKS[tone]}, head and shoulders, sharp focus, vertical video frame"
    )


def _shorten(text: str, max_chars: int) -> str:
    """``text`` cut at a word boundary to at most ``max_chars`` characters (plus ``…``)."""
    if len(text) <= max_chars:
        return text
    cut = text[: max_chars + 1].rsplit(" ", 1)[0] if " " in text[:max_chars] else text[:max_chars]
    return cut.rstrip(",;:-–— ") + "…"


def _capitalise(text: str) -> str:
    return text[:1].upper() + text[1:]
