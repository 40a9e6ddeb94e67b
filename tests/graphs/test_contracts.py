"""Connected steps agree: a node's output must fit what its successor accepts.

The bounds are declared once, in the services' ``capability.json`` (``accepts`` on the
taking side, ``produces`` on the giving side); a graph that breaks them is refused at
submission, naming both nodes, instead of failing at its last step.
"""

from __future__ import annotations

import json
from typing import Any

import pytest

from apps.capabilities.registry import SERVICES_DIR, CapabilityRegistry
from apps.capabilities.services.video_compose import handler as compose_handler
from apps.graphs.validation import GraphValidationError, ValidationIssue, validate_graph
from testkit.graphs import edge, graph, node


@pytest.fixture(scope="module")
def registry() -> CapabilityRegistry:
    return CapabilityRegistry.from_directories([SERVICES_DIR], include_debug=True)


def keyframe(side: int) -> dict[str, Any]:
    return node(
        "kf", "image.keyframe", params={"prompt": "a presenter", "width": side, "height": side}
    )


COMPOSE = node("compose", "video.compose")


def mismatches(document: dict[str, Any], registry: CapabilityRegistry) -> list[ValidationIssue]:
    with pytest.raises(GraphValidationError) as caught:
        validate_graph(document, registry=registry)
    issues = caught.value.issues
    assert {issue.rule for issue in issues} == {"contract_mismatch"}
    return issues


def test_a_keyframe_smaller_than_compose_takes_is_refused_naming_both_nodes(
    registry: CapabilityRegistry,
) -> None:
    issues = mismatches(graph([keyframe(32), COMPOSE], [edge("kf", "compose")]), registry)

    assert len(issues) == 2  # width and height
    first = issues[0]
    assert (first.node, first.edge, first.path) == ("compose", 0, "edges[0]")
    assert "'kf' (image.keyframe)" in first.message
    assert "'compose' (video.compose)" in first.message
    assert "32 px" in first.message
    assert "at least 64 px" in first.message


def test_the_bound_checked_at_submission_is_the_one_the_service_enforces(
    registry: CapabilityRegistry,
) -> None:
    declared = json.loads((SERVICES_DIR / "video_compose" / "capability.json").read_text())
    accepts = registry.get("video.compose").accepts["image"]

    assert accepts == declared["accepts"]["image"]
    assert compose_handler.MIN_IMAGE_SIDE == accepts["width"]["min"] == 64
    assert accepts["frames"]["max"] == compose_handler.MAX_CLIP_FRAMES


@pytest.mark.parametrize("side", [64, 512])
def test_a_keyframe_compose_takes_is_accepted(registry: CapabilityRegistry, side: int) -> None:
    validate_graph(graph([keyframe(side), COMPOSE], [edge("kf", "compose")]), registry=registry)


def test_sizes_flow_through_an_animation(registry: CapabilityRegistry) -> None:
    animate = node("animate", "video.animate")
    document = graph(
        [keyframe(40), animate, COMPOSE], [edge("kf", "animate"), edge("animate", "compose")]
    )

    issues = mismatches(document, registry)

    assert {issue.edge for issue in issues} == {1}
    assert "'animate' (video.animate)" in issues[0].message
    assert "40 px" in issues[0].message


def test_an_upscaler_between_lifts_a_small_keyframe_over_the_bound(
    registry: CapabilityRegistry,
) -> None:
    document = graph(
        [keyframe(32), node("animate", "video.animate"), node("up", "video.upscale"), COMPOSE],
        [edge("kf", "animate"), edge("animate", "up"), edge("up", "compose")],
    )

    validate_graph(document, registry=registry)


def test_a_failure_edge_hands_on_nothing_to_check(registry: CapabilityRegistry) -> None:
    document = graph([keyframe(32), COMPOSE], [edge("kf", "compose", kind="on_failure")])

    validate_graph(document, registry=registry)
