"""The soak bench's load: the original system's pipeline shapes, read from the templates,
with every service replaced by a debug stand-in on the same queue (``bench/soak.py`` runs
them; ``tests/graphs/test_bench_shapes.py`` checks they keep the templates' shapes)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
SHAPES = ("capabilities", "train_and_render", "narrated_video")
GPU_STAND_INS = {"lora.train", "image.keyframes", "video.lipsync", "video.render"}
# Real GPU services whose stand-ins sleep (the rest echo): training and keyframes, the
# steps the original shapes slept for.
GPU_SLEEPERS = {"lora.train", "image.keyframe"}


def load_shapes() -> dict[str, dict[str, Any]]:
    folder = REPO / "apps" / "graphs" / "pipelines"
    return {name: json.loads((folder / f"{name}.json").read_text())["graph"] for name in SHAPES}


def service_queues() -> dict[str, str]:
    """Each declared service's queue, read from its ``capability.json`` (no Django here)."""
    folder = REPO / "apps" / "capabilities" / "services"
    declared = (json.loads(path.read_text()) for path in folder.glob("*/capability.json"))
    return {data["id"]: data["queue"] for data in declared}


def soak_graph(
    template: dict[str, Any], nonce: str, sleep: float, queues: dict[str, str]
) -> dict[str, Any]:
    """The template's nodes and edges with every service replaced by a debug stand-in on
    the same queue: the heavy GPU steps (``GPU_SLEEPERS``) sleep ``sleep`` seconds on the
    gpu queue, other GPU steps echo there, CPU steps echo on the cpu queue; a nonce per
    node keeps the result cache out of it. Templates that are already built from
    ``debug.*`` stand-ins say in their tags what the stand-in is for."""
    document = json.loads(json.dumps(template))
    for node in document["nodes"]:
        service = node["service"]
        if service.startswith("debug."):
            stand_in = next((t.split(":", 1)[1] for t in node.get("tags", []) if ":" in t), "")
            on_gpu = stand_in in GPU_STAND_INS
            sleeps = service == "debug.sleep"
        else:
            on_gpu = queues[service] == "gpu"
            sleeps = service in GPU_SLEEPERS
        if sleeps:
            node["service"] = "bench.gpu_sleep" if on_gpu else "debug.sleep"
            node["params"] = {"seconds": sleep}
        else:
            node["service"] = "bench.gpu_echo" if on_gpu else "debug.echo"
            node["params"] = {**node.get("params", {}), "nonce": nonce}
    document["workflowId"] = f"soak-{nonce[:8]}"
    return document
