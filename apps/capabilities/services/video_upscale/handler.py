"""video.upscale: frames → (cached) RRDBNet → larger frames. torch is imported inside
:func:`run`."""

from __future__ import annotations

from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.services.gpu_frames import load_frames, save_frames
from myspinbot.errors import PermanentError


def find_frames(ctx: NodeContext) -> list[dict[str, Any]]:
    for value in ctx.inputs.values():
        if isinstance(value, dict):
            for key in ("frames", "keyframes"):
                if isinstance(value.get(key), list) and value[key]:
                    return list(value[key])
    raise PermanentError("missing_input", "no frames: connect a node whose output has frames")


def run(ctx: NodeContext) -> dict[str, Any]:
    """Upscale every frame; see ``capability.json``."""
    from gpu_tasks import loader, upscale, worker
    from gpu_tasks.device import get_device
    from gpu_tasks.model_cache import get_cache

    refs = find_frames(ctx)
    limit = ctx.params.get("max_frames", 500)
    if len(refs) > limit:
        raise PermanentError("too_many_frames", f"{len(refs)} frames; at most {limit}")
    frames = load_frames(ctx, refs)
    path = upscale.weights_path(loader.model_root())
    with worker.guarded({"frames": len(frames), "width": frames[0].width}):
        device = get_device()
        if not path.is_file():
            raise PermanentError("backend_unavailable", f"no upscaler weights at {path}")
        model = get_cache().get(
            f"realesrgan:{path}:{device.dtype}",
            lambda: upscale.load_upscaler(path, device.torch_device, device.dtype),
            expected_bytes=path.stat().st_size,
        )
        larger = []
        for number, frame in enumerate(frames):
            larger.append(upscale.upscale(model, frame))
            ctx.progress(0.9 * (number + 1) / len(frames), f"frame {number + 1}/{len(frames)}")
    stored = save_frames(ctx, larger, "upscaled")
    ctx.progress(1.0, "frames upscaled")
    return {
        "frames": stored,
        "keyframes": stored,
        "scale": model.config.scale,
        "width": larger[0].width,
        "height": larger[0].height,
    }
