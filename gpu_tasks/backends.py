"""Which GPU backends this worker can run, from the weights configured on it.

The worker's capability report lists them, and leaves out services none of whose backends
is available, so the planner offers only pipelines some worker can run.
"""

from __future__ import annotations

from typing import Any

from gpu_tasks import lipsync, loader, speech, upscale
from myspinbot.model_store import ModelStore


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
    store = ModelStore(loader.model_root())
    entry = store.entry_for_ref(str(upscale.WEIGHTS.parent))
    if entry is not None and not store.state(entry).usable:
        return []
    return ["realesrgan"] if upscale.weights_path(loader.model_root()).is_file() else []


def model_store_report() -> dict[str, dict[str, object]]:
    """The state of every manifest model under this worker's model root (a stat per file)."""
    return {
        state.entry.name: {
            key: value
            for key, value in state.to_json().items()
            if key in ("state", "usable", "detail", "installed_bytes", "command")
        }
        for state in ModelStore(loader.model_root()).states()
    }


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
