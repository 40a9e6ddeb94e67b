"""Loading models: one loader for production and tests alike.

A model reference is a model of the manifest (its name, hub id or folder: loaded from its
folder under the model root once ``manage.py models fetch`` installed it, never fetched
here), a folder in diffusers format (absolute, or relative to the model root
``MYSPINBOT_MODEL_ROOT``), or another hub id (``org/name``) fetched into the model root
where the machine has network (``HF_HUB_OFFLINE`` false). Loaded pipelines go through the process's
:mod:`model cache <gpu_tasks.model_cache>`, so a second task using the same base model loads
nothing.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
from pathlib import Path
from typing import Any

from gpu_tasks.device import Device, get_device
from gpu_tasks.model_cache import get_cache
from myspinbot.model_store import ModelStore

_HUB_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*/[A-Za-z0-9][A-Za-z0-9._-]*$")
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth")


class ModelUnavailable(RuntimeError):
    """The model is neither a local folder nor fetchable from the hub here."""


def model_root() -> Path:
    from django.conf import settings

    return Path(settings.MYSPINBOT_MODEL_ROOT)


def hub_offline() -> bool:
    from django.conf import settings

    return bool(settings.HF_HUB_OFFLINE)


def resolve(ref: str) -> str:
    """The local folder of ``ref``, or ``ref`` itself when it is a hub id we may fetch.

    Raises :class:`ModelUnavailable` naming what was looked for.
    """
    ref = ref.strip()
    if not ref:
        raise ModelUnavailable("no model configured")
    store = ModelStore(model_root())
    entry = store.entry_for_ref(ref)
    if entry is not None:
        # A model of the manifest: only from its folder, and only when it is usable (never
        # half fetched or corrupt); never downloaded here (`models fetch` shows the licence).
        state = store.state(entry)
        if not state.usable:
            raise ModelUnavailable(
                f"model {entry.name!r} is {state.state} on this worker: run {state.command}"
            )
        return str(store.folder(entry).resolve())
    path = Path(ref)
    candidates = [path] if path.is_absolute() else [model_root() / ref]
    for candidate in candidates:
        if candidate.is_dir():
            return str(candidate.resolve())
    if _HUB_ID.match(ref) and not hub_offline():
        return ref
    # (the message reaches users as a node error: it names the model, not the folders)
    hint = " (HF_HUB_OFFLINE is set)" if _HUB_ID.match(ref) else ""
    raise ModelUnavailable(f"model {ref!r} is not installed on this worker{hint}")


def is_available(ref: str) -> bool:
    try:
        resolve(ref)
    except ModelUnavailable:
        return False
    return True


def weights_bytes(location: str) -> int:
    """Size of the weight files of a local model folder (0 for a hub id)."""
    path = Path(location)
    if not path.is_dir():
        return 0
    return sum(f.stat().st_size for f in path.rglob("*") if f.suffix in WEIGHT_SUFFIXES)


_fingerprints: dict[tuple[str, int, float], str] = {}
_fingerprint_lock = threading.Lock()


def fingerprint(location: str) -> str:
    """sha256 of a model folder's configs and UNet weights (the hub id for a hub model).

    Computed once per process per folder state (path, size, modification time).
    """
    path = Path(location)
    if not path.is_dir():
        return hashlib.sha256(location.encode()).hexdigest()
    files = sorted(
        f for f in path.rglob("*") if f.is_file() and (f.suffix == ".json" or "unet" in f.parts)
    )
    stamp = (str(path), sum(f.stat().st_size for f in files), max(f.stat().st_mtime for f in files))
    with _fingerprint_lock:
        if stamp in _fingerprints:
            return _fingerprints[stamp]
        digest = hashlib.sha256()
        for f in files:
            digest.update(str(f.relative_to(path)).encode() + b"\0")
            with f.open("rb") as handle:
                for chunk in iter(lambda: handle.read(1024 * 1024), b""):
                    digest.update(chunk)
        _fingerprints[stamp] = digest.hexdigest()
        return _fingerprints[stamp]


def _pretrained_kwargs(device: Device) -> dict[str, Any]:
    return {
        "dtype": device.dtype,
        "local_files_only": hub_offline(),
        "cache_dir": str(model_root() / "hub"),
    }


def _prepare(pipe: Any, device: Device) -> Any:
    pipe.to(device.torch_device)
    pipe.set_progress_bar_config(disable=True)
    for component in pipe.components.values():
        if hasattr(component, "eval") and hasattr(component, "requires_grad_"):
            component.eval()
            component.requires_grad_(False)
    return pipe


def load_sd_pipeline(ref: str, device: Device | None = None) -> Any:
    """The Stable Diffusion (1.5 family) pipeline of ``ref``, from the cache when loaded.

    UNet, VAE, text encoder and tokenizer come from the folder; no safety checker.
    """
    from diffusers import StableDiffusionPipeline

    device = device or get_device()
    location = resolve(ref)
    key = f"sd:{location}:{device.dtype}"

    def load() -> Any:
        pipe = StableDiffusionPipeline.from_pretrained(
            location,
            safety_checker=None,
            feature_extractor=None,
            requires_safety_checker=False,
            **_pretrained_kwargs(device),
        )
        return _prepare(pipe, device)

    return get_cache().get(key, load, expected_bytes=weights_bytes(location))


def load_motion_adapter(ref: str, device: Device | None = None) -> Any:
    """An AnimateDiff motion adapter (a diffusers ``MotionAdapter`` folder or hub id)."""
    from diffusers import MotionAdapter

    device = device or get_device()
    location = resolve(ref)
    key = f"motion:{location}:{device.dtype}"

    def load() -> Any:
        adapter = MotionAdapter.from_pretrained(location, **_pretrained_kwargs(device))
        adapter.to(device.torch_device).eval().requires_grad_(False)
        return adapter

    return get_cache().get(key, load, expected_bytes=weights_bytes(location))


def load_animatediff_pipeline(base_ref: str, adapter_ref: str, device: Device | None = None) -> Any:
    """AnimateDiff (video to video) built from the cached SD pipeline and motion adapter."""
    from diffusers import AnimateDiffVideoToVideoPipeline

    device = device or get_device()
    base, adapter_location = resolve(base_ref), resolve(adapter_ref)
    key = f"animatediff:{base}:{adapter_location}:{device.dtype}"

    def load() -> Any:
        sd = load_sd_pipeline(base_ref, device)
        adapter = load_motion_adapter(adapter_ref, device)
        pipe = AnimateDiffVideoToVideoPipeline.from_pipe(sd, motion_adapter=adapter)
        return _prepare(pipe, device)

    return get_cache().get(key, load, expected_bytes=weights_bytes(base))


def load_svd_pipeline(ref: str, device: Device | None = None) -> Any:
    """Stable Video Diffusion (image to video)."""
    from diffusers import StableVideoDiffusionPipeline

    device = device or get_device()
    location = resolve(ref)
    key = f"svd:{location}:{device.dtype}"

    def load() -> Any:
        pipe = StableVideoDiffusionPipeline.from_pretrained(location, **_pretrained_kwargs(device))
        return _prepare(pipe, device)

    return get_cache().get(key, load, expected_bytes=weights_bytes(location))


def model_config(location: str) -> dict[str, Any]:
    """``model_index.json`` of a local folder ({} for a hub id)."""
    index = Path(location) / "model_index.json"
    return json.loads(index.read_text()) if index.is_file() else {}


def load_musetalk(device: Device | None = None) -> Any:
    """MuseTalk's components (:class:`gpu_tasks.musetalk.MuseTalk`) from ``musetalk/``
    under the model root; :class:`ModelUnavailable` when a file is missing."""
    from gpu_tasks import musetalk

    device = device or get_device()
    if not musetalk.weights_present(model_root()):
        raise ModelUnavailable("model 'musetalk' is not installed on this worker")
    location = musetalk.folder(model_root())
    key = f"musetalk:{location.resolve()}:{device.dtype}"
    return get_cache().get(
        key, lambda: musetalk.load(location, device), expected_bytes=weights_bytes(str(location))
    )
