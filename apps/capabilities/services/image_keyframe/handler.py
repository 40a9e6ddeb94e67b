"""image.keyframe: prompt (+ LoRA) → (cached) base pipeline → denoise with per-step
progress and cancel → ``keyframe.png``. torch is imported inside :func:`run`."""

from __future__ import annotations

import io
from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.services.gpu_common import base_model, fetch_lora, find_lora, find_prompt
from myspinbot.errors import PermanentError


def run(ctx: NodeContext) -> dict[str, Any]:
    """Render the keyframe; see ``capability.json``."""
    from gpu_tasks import keyframe, loader, worker
    from gpu_tasks.device import get_device

    params = ctx.params
    prompt = find_prompt(ctx)
    found = find_lora(ctx)
    lora_ref, trigger = found if found else (None, "")
    request = keyframe.KeyframeRequest(
        prompt=prompt,
        negative_prompt=params.get("negative_prompt", ""),
        seed=params.get("seed", 0),
        steps=params.get("steps", 25),
        guidance=float(params.get("guidance", 7.5)),
        width=params.get("width", 512),
        height=params.get("height", 512),
        lora=fetch_lora(ctx, lora_ref) if lora_ref else None,
        lora_weight=float(params.get("lora_weight", 1.0)),
        trigger=trigger,
    )
    sizes = {"width": request.width, "height": request.height, "steps": request.steps}
    with worker.guarded(sizes):
        ctx.progress(0.0, "loading the base model")
        device = get_device()
        try:
            pipe = loader.load_sd_pipeline(base_model(ctx), device)
        except loader.ModelUnavailable as error:
            raise PermanentError("model_unavailable", str(error)) from None

        def on_step(done: int, total: int) -> None:
            ctx.progress(0.05 + 0.9 * done / total, f"denoising step {done}/{total}")

        image = keyframe.render(pipe, request, device, on_step)
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    stored = ctx.artifacts.save("keyframe.png", buffer.getvalue(), "image/png")
    ctx.progress(1.0, "keyframe ready")
    return {
        "keyframes": [stored],
        "image": stored,
        "prompt": request.full_prompt(),
        "seed": request.seed,
        "width": request.width,
        "height": request.height,
        "lora": lora_ref,
        "trigger": trigger,
    }
