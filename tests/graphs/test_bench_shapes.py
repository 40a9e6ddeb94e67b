"""The soak bench's load: the original system's pipeline shapes, taken from the templates,
with every service replaced by a debug stand-in on the same queue."""

from __future__ import annotations

from pathlib import Path

import pytest

from apps.capabilities.registry import SERVICES_DIR, CapabilityRegistry
from apps.graphs.planner import load_templates
from apps.graphs.validation import validate_graph
from testkit import soak_graphs as soak

BENCH_CAPABILITIES = Path(soak.REPO) / "bench" / "capabilities"


@pytest.mark.parametrize(
    ("name", "sleepers", "gpu_echoes", "cpu_echoes"),
    [
        ("capabilities", [], [], ["get_capabilities", "merge_manifest"]),
        (
            "train_and_render",
            ["keyframe", "train_lora"],
            ["animate"],
            ["lipsync", "render_motion", "render_video", "script", "speech"],
        ),
        (
            "narrated_video",
            [],
            [],
            ["lipsync", "script", "speech", "video", "voice_profile"],
        ),
    ],
)
def test_soak_graphs_keep_the_templates_shapes_with_debug_services(
    name: str, sleepers: list[str], gpu_echoes: list[str], cpu_echoes: list[str]
) -> None:
    template = load_templates()[name].graph
    registry = CapabilityRegistry.from_directories(
        [SERVICES_DIR, BENCH_CAPABILITIES], include_debug=True
    )

    document = soak.soak_graph(template, "n" * 32, 0.05, soak.service_queues())

    validate_graph(document, registry=registry)
    assert [n["id"] for n in document["nodes"]] == [n["id"] for n in template["nodes"]]
    assert document["edges"] == template["edges"]
    by_service: dict[str, list[str]] = {}
    for node in document["nodes"]:
        by_service.setdefault(node["service"], []).append(node["id"])
    assert {key: sorted(value) for key, value in by_service.items()} == {
        key: value
        for key, value in {
            "bench.gpu_sleep": sleepers,
            "bench.gpu_echo": gpu_echoes,
            "debug.echo": cpu_echoes,
        }.items()
        if value
    }
    assert all(
        node["params"] == {"seconds": 0.05}
        for node in document["nodes"]
        if node["service"] == "bench.gpu_sleep"
    )
