"""The original system's service ids, and the services of ours that do that work.

The original named a node's work with its own ids (``train_lora``,
``generate.f5_to_tts``...; in its later notes under ``task`` instead of ``service``).
:data:`ALIASES` maps each to the service here that does that work, with the parameter
names that changed, or refuses it with the reason when no service here can do it.
``apps.graphs.original`` applies the table to a posted document; ``tests/capabilities/
test_aliases.py`` checks that every target is registered and declares the outputs the
alias promises.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType


@dataclass(frozen=True)
class Alias:
    """``original`` runs as ``service`` (``None``: refused, ``why`` says why).

    ``params`` renames the original's parameter names to ours (``prompt`` → ``topic``);
    ``produces`` names the outputs of ``service`` that carry the original's result.
    """

    original: str
    service: str | None
    why: str
    params: Mapping[str, str] = field(default_factory=dict)
    produces: tuple[str, ...] = ()


_SCRIPT = {"prompt": "topic"}
_TABLE = [
    Alias(
        "llm.generate_script",
        "llm.generate_script",
        "writes the stage prompt and narration about a topic (the original's prompt)",
        _SCRIPT,
        ("stage_prompt", "narration"),
    ),
    Alias(
        "script.generateScript",
        "llm.generate_script",
        "the original's control-plane script writer",
        _SCRIPT,
        ("stage_prompt", "narration"),
    ),
    Alias(
        "generateScript",
        "llm.generate_script",
        "the original planner's script step",
        _SCRIPT,
        ("stage_prompt", "narration"),
    ),
    Alias(
        "generate.f5_to_tts",
        "tts.speak",
        "speaks the narration in the speaker's voice (F5-TTS was the original's "
        "zero-shot cloning engine; tts.speak clones on GPU workers that have one, and "
        "conforms neural CPU speech to the voice profile elsewhere)",
        produces=("audio",),
    ),
    Alias("f5_to_tts", "tts.speak", "see generate.f5_to_tts", produces=("audio",)),
    Alias(
        "generate.infinite_talk",
        "lipsync.sync",
        "makes the portrait speak the narration (InfiniteTalk was the original's "
        "audio-driven talking-head model)",
        produces=("video",),
    ),
    Alias("infinite_talk", "lipsync.sync", "see generate.infinite_talk", produces=("video",)),
    Alias(
        "generate.upscale_video",
        "video.upscale",
        "makes the frames of a clip larger with a Real-ESRGAN-style network",
        produces=("frames",),
    ),
    Alias("upscale_video", "video.upscale", "see generate.upscale_video", produces=("frames",)),
    Alias(
        "dummy.dummy_task",
        "debug.noop",
        "the original's placeholder step: accepts any params and does nothing",
    ),
    Alias(
        "train_lora",
        "lora.train",
        "trains an identity LoRA from photos of one person",
        produces=("lora", "profile_id"),
    ),
    Alias(
        "train_voice",
        "voice.build_profile",
        "turns a voice sample and its transcript into a reusable voice profile (the "
        "original's voice fine-tuning placeholder)",
        produces=("profile_id",),
    ),
    Alias(
        "render_video",
        "video.compose",
        "renders the MP4: the talking clip or the keyframes with the narration",
        produces=("video",),
    ),
    Alias(
        "get_capabilities",
        "capabilities.report",
        "asks the workers what they run and reports it",
        produces=("capabilities", "workers"),
    ),
    Alias(
        "capabilities.getManifest",
        "capabilities.report",
        "merges the workers' manifests with the service declarations",
        produces=("capabilities", "workers"),
    ),
    Alias(
        "artifacts.upload_artifact",
        None,
        "uploads are not a step here: POST the files to /api/uploads and name them in "
        'a node\'s input as {"artifact": "<id>"}',
    ),
    Alias(
        "artifacts.prepare_assets",
        None,
        "every artifact already records its key, size, content type and sha256 "
        "(GET /api/jobs/{id} lists them); no step is needed",
    ),
    Alias(
        "script.postProcess",
        None,
        "the original only named this step and never implemented it; "
        "llm.generate_script's output is used as it is",
    ),
]

ALIASES: Mapping[str, Alias] = MappingProxyType({alias.original: alias for alias in _TABLE})


def alias_for(service: str) -> Alias | None:
    """The alias of an original service id; ``None`` for an id the original never used."""
    return ALIASES.get(service)
