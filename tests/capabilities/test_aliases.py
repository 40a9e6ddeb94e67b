"""The original system's service ids map to services here that do that work."""

from __future__ import annotations

import pytest

from apps.capabilities.aliases import ALIASES
from apps.capabilities.registry import SERVICES_DIR, CapabilityRegistry

# The ids the original's documents use (its pipelines, planner and task registry).
ORIGINAL_IDS = [
    "llm.generate_script",
    "generate.f5_to_tts",
    "generate.infinite_talk",
    "generate.upscale_video",
    "dummy.dummy_task",
    "train_lora",
    "train_voice",
    "render_video",
    "script.generateScript",
    "generateScript",
    "f5_to_tts",
    "infinite_talk",
    "upscale_video",
    "get_capabilities",
    "capabilities.getManifest",
]
REGISTRY = CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)


def test_every_original_id_has_an_alias() -> None:
    assert sorted(set(ORIGINAL_IDS) - set(ALIASES)) == []


@pytest.mark.parametrize("original", sorted(ALIASES))
def test_an_alias_names_a_registered_service_with_the_outputs_it_promises_or_why_not(
    original: str,
) -> None:
    alias = ALIASES[original]

    assert alias.why
    if alias.service is None:
        assert original not in ORIGINAL_IDS  # every id the original ran has a service
        return
    capability = REGISTRY.get(alias.service)
    outputs = {port.name for port in capability.outputs}
    assert set(alias.produces) <= outputs, (original, alias.service, outputs)
    properties = capability.params_schema.get("properties", {})
    assert set(alias.params.values()) <= set(properties), (original, alias.params)


@pytest.mark.parametrize(
    ("original", "service", "kinds"),
    [
        ("generate.f5_to_tts", "tts.speak", {"audio": "audio"}),
        ("generate.infinite_talk", "lipsync.sync", {"video": "video"}),
        ("generate.upscale_video", "video.upscale", {"frames": "image"}),
        ("train_lora", "lora.train", {"lora": "lora"}),
        ("train_voice", "voice.build_profile", {"profile_id": "voice_profile"}),
        ("render_video", "video.compose", {"video": "video"}),
        ("script.generateScript", "llm.generate_script", {"narration": "text"}),
    ],
)
def test_the_work_each_original_step_did_is_what_its_service_produces(
    original: str, service: str, kinds: dict[str, str]
) -> None:
    capability = REGISTRY.get(ALIASES[original].service or "")

    assert capability.id == service
    assert {port.name: port.kind for port in capability.outputs if port.name in kinds} == kinds
