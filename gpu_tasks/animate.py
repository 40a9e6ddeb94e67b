"""Animation: a keyframe → a short clip of frames.

Two backends, chosen per node:

* ``animatediff`` — the SD-1.5 pipeline with an AnimateDiff motion adapter, video to video:
  the keyframe repeated as the source clip, re-noised to ``strength`` and denoised with the
  motion module, so the clip starts from the keyframe's look. The identity LoRA (and its
  trigger) is applied as for keyframes.
* ``svd`` — Stable Video Diffusion, conditioned on the keyframe image itself.

Each is available only when its weights are configured (``MYSPINBOT_MOTION_ADAPTER``,
``MYSPINBOT_SVD_MODEL``). ``on_step(done, total)`` runs after each denoising step and may
raise to stop (cancel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gpu_tasks.lora import lead_with_trigger, lora_applied

StepCallback = Callable[[int, int], None]


@dataclass(frozen=True)
class AnimateRequest:
    prompt: str
    frames: int = 16
    steps: int = 20
    guidance: float = 7.5
    strength: float = 0.6
    seed: int = 0
    fps: int = 8
    lora: Path | None = None
    lora_weight: float = 1.0
    trigger: str = ""

    def full_prompt(self) -> str:
        return lead_with_trigger(self.prompt, self.lora, self.trigger)


def _step_callback(on_step: StepCallback | None, total: int) -> Any:
    def step_end(_pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            on_step(step + 1, total)
        return kwargs

    return step_end


def animatediff(
    pipe: Any, keyframe: Image.Image, request: AnimateRequest, on_step: StepCallback | None = None
) -> list[Image.Image]:
    """Frames from the AnimateDiff video-to-video pipeline; see the module doc."""
    generator = torch.Generator("cpu").manual_seed(request.seed)
    source = [keyframe.convert("RGB")] * request.frames
    # The pipeline runs int(steps * strength) of its steps.
    total = max(1, int(request.steps * request.strength))
    with lora_applied(pipe, request.lora, request.lora_weight, "animate"), torch.no_grad():
        result = pipe(
            video=source,
            height=keyframe.height,
            width=keyframe.width,
            prompt=request.full_prompt(),
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            strength=request.strength,
            generator=generator,
            callback_on_step_end=_step_callback(on_step, total),
            output_type="pil",
        )
    frames: list[Image.Image] = list(result.frames[0])
    return frames


def svd(
    pipe: Any, keyframe: Image.Image, request: AnimateRequest, on_step: StepCallback | None = None
) -> list[Image.Image]:
    """Frames from Stable Video Diffusion conditioned on the keyframe."""
    generator = torch.Generator("cpu").manual_seed(request.seed)
    with torch.no_grad():
        result = pipe(
            keyframe.convert("RGB"),
            height=keyframe.height,
            width=keyframe.width,
            num_frames=request.frames,
            num_inference_steps=request.steps,
            fps=request.fps,
            generator=generator,
            callback_on_step_end=_step_callback(on_step, request.steps),
            output_type="pil",
        )
    frames: list[Image.Image] = list(result.frames[0])
    return frames
