"""Which GPU backends this worker can run, from the weights configured on it.

The worker's capability report lists them, and leaves out services none of whose backends
is available, so the planner offers only pipelines some worker can run.
"""

from __future__ import annotations

from typing import Any

from gpu_tasks import lipsync, loader, speech, upscale


def _setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


def diffusion_models() -> list[str]:
    return ["stable-diffusion"] if loader.is_available(_setting("MYSPINBOT_BASE_MODEL")) else []


def animate_backends() -> list[str]:
    names = []
    base = loader.is_available(_setting("MYSPINBOT_BASE_MODEL"))
    adapter = _setting("MYSPINBOT_MOTION_ADAPTER")
    if base and adapter and loader.is_available(adapter):
        names.append("animatediff")
    svd = _setting("MYSPINBOT_SVD_MODEL")
    if svd and loader.is_available(svd):
        names.append("svd")
    return names


def upscale_backends() -> list[str]:
    return ["realesrgan"] if upscale.weights_path(loader.model_root()).is_file() else []


def available() -> dict[str, list[str]]:
    """Available backends by kind."""
    return {
        "diffusion": diffusion_models(),
        "animate": animate_backends(),
        "upscale": upscale_backends(),
        "lipsync": lipsync.available_backends(),
        "tts_gpu": speech.available_engines(),
    }


# The backend kind each GPU service needs.
SERVICE_NEEDS = {
    "lora.train": "diffusion",
    "image.keyframe": "diffusion",
    "video.animate": "animate",
    "video.upscale": "upscale",
    "lipsync.gpu": "lipsync",
    "tts.clone": "tts_gpu",
}


def runnable(services: list[str], backends: dict[str, list[str]]) -> list[str]:
    """``services`` less those whose backend kind has nothing available."""
    return [s for s in services if s not in SERVICE_NEEDS or backends.get(SERVICE_NEEDS[s])]
