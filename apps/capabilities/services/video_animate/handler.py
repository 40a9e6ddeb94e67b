"""video.animate: keyframe → (cached) AnimateDiff or SVD pipeline → frames with per-step
progress and cancel → PNG frames and ``clip.mp4``. torch is imported inside :func:`run`."""

from __future__ import annotations

import io
from typing import Any

from django.conf import settings

from apps.capabilities.context import NodeContext
from apps.capabilities.media import probe
from apps.capabilities.services.gpu_common import base_model, fetch_lora, find_lora
from apps.capabilities.services.gpu_frames import save_frames, write_clip
from myspinbot.errors import PermanentError


def find_keyframe(ctx: NodeContext) -> tuple[dict[str, Any], str]:
    """The predecessor's image reference and the prompt it was rendered from."""
    for value in ctx.inputs.values():
        if isinstance(value, dict) and isinstance(value.get("image"), dict):
            return value["image"], str(value.get("prompt", ""))
    raise PermanentError("missing_input", "no keyframe: connect an image.keyframe node")


def run(ctx: NodeContext) -> dict[str, Any]:
    """Animate the keyframe; see ``capability.json``."""
    from gpu_tasks import animate, loader, worker
    from gpu_tasks.device import get_device

    params = ctx.params
    backend = params.get("backend", "animatediff")
    keyframe_ref, keyframe_prompt = find_keyframe(ctx)
    prompt = params.get("prompt") or keyframe_prompt
    if not prompt:
        raise PermanentError("missing_input", "no prompt: give params.prompt")
    found = find_lora(ctx) if backend == "animatediff" else None
    lora_ref, trigger = found if found else (None, "")
    request = animate.AnimateRequest(
        prompt=prompt,
        frames=params.get("frames", 16),
        steps=params.get("steps", 20),
        guidance=float(params.get("guidance", 7.5)),
        strength=float(params.get("strength", 0.6)),
        seed=params.get("seed", 0),
        fps=params.get("fps", 8),
        lora=fetch_lora(ctx, lora_ref) if lora_ref else None,
        lora_weight=float(params.get("lora_weight", 1.0)),
        trigger=trigger,
    )
    with ctx.artifacts.open(keyframe_ref) as handle:
        keyframe_image = probe.open_image(io.BytesIO(handle.read())).convert("RGB")
    sizes = {
        "frames": request.frames,
        "width": keyframe_image.width,
        "height": keyframe_image.height,
    }

    def on_step(done: int, total: int) -> None:
        ctx.progress(0.05 + 0.8 * done / total, f"denoising step {done}/{total}")

    with worker.guarded(sizes):
        ctx.progress(0.0, f"loading {backend}")
        device = get_device()
        try:
            if backend == "animatediff":
                adapter = settings.MYSPINBOT_MOTION_ADAPTER
                if not adapter:
                    raise loader.ModelUnavailable("MYSPINBOT_MOTION_ADAPTER is not set")
                pipe = loader.load_animatediff_pipeline(base_model(ctx), adapter, device)
                frames = animate.animatediff(pipe, keyframe_image, request, on_step)
            else:
                if not settings.MYSPINBOT_SVD_MODEL:
                    raise loader.ModelUnavailable("MYSPINBOT_SVD_MODEL is not set")
                pipe = loader.load_svd_pipeline(settings.MYSPINBOT_SVD_MODEL, device)
                frames = animate.svd(pipe, keyframe_image, request, on_step)
        except loader.ModelUnavailable as error:
            raise PermanentError(
                "backend_unavailable", f"{backend} cannot run here: {error}"
            ) from None
    ctx.progress(0.9, f"storing {len(frames)} frames")
    refs = save_frames(ctx, frames, "frame")
    assert ctx.workdir is not None
    clip = ctx.artifacts.save(
        "clip.mp4", write_clip(frames, request.fps, ctx.workdir / "clip.mp4"), "video/mp4"
    )
    ctx.progress(1.0, "clip ready")
    return {
        "frames": refs,
        "keyframes": refs,
        "clip": clip,
        "backend": backend,
        "fps": request.fps,
        "width": frames[0].width,
        "height": frames[0].height,
    }
