"""Keyframes: a stage prompt (with an optional identity LoRA and its trigger) → an image.

Seeded, with steps, guidance and size as parameters; ``on_step(done, total)`` runs after
every denoising step and may raise to stop the render there (cancel).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from PIL import Image

from gpu_tasks.device import Device
from gpu_tasks.lora import lead_with_trigger, lora_applied


@dataclass(frozen=True)
class KeyframeRequest:
    prompt: str
    negative_prompt: str = ""
    seed: int = 0
    steps: int = 25
    guidance: float = 7.5
    width: int = 512
    height: int = 512
    lora: Path | None = None
    lora_weight: float = 1.0
    trigger: str = ""

    def full_prompt(self) -> str:
        return lead_with_trigger(self.prompt, self.lora, self.trigger)


def render(
    pipe: Any,
    request: KeyframeRequest,
    device: Device,
    on_step: Callable[[int, int], None] | None = None,
) -> Image.Image:
    """Render one image; see the module doc."""

    def step_end(_pipe: Any, step: int, _timestep: Any, kwargs: dict[str, Any]) -> dict[str, Any]:
        if on_step is not None:
            on_step(step + 1, request.steps)
        return kwargs

    generator = torch.Generator("cpu").manual_seed(request.seed)
    with lora_applied(pipe, request.lora, request.lora_weight, "keyframe"), torch.no_grad():
        result = pipe(
            prompt=request.full_prompt(),
            negative_prompt=request.negative_prompt or None,
            num_inference_steps=request.steps,
            guidance_scale=request.guidance,
            width=request.width,
            height=request.height,
            generator=generator,
            callback_on_step_end=step_end,
            output_type="pil",
        )
    image: Image.Image = result.images[0]
    return image
