"""lora.train: check inputs → prepare photos → (cached) base pipeline → encode once →
train with progress, samples and checkpoints → store the LoRA, its metadata and a Profile.

A restarted attempt of the same node resumes from the newest checkpoint this node stored
for the same training configuration. torch and ``gpu_tasks`` are imported inside
:func:`run`, so importing this module costs nothing.
"""

from __future__ import annotations

import io
import json
import logging
import time
from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.registry import get_registry
from apps.capabilities.services.gpu_common import base_model, lora_profile
from myspinbot import metrics
from myspinbot.errors import PermanentError

logger = logging.getLogger(__name__)

CHECKPOINT_PREFIX = "checkpoint-"
# Checkpoints kept per node: the newest to resume from and one before it.
CHECKPOINTS_KEPT = 2
LOSS_CURVE_POINTS = 500
# What the output of a LoRA profile holds (reused as is when a job names the profile).
OUTPUT_KEYS = (
    "lora",
    "metadata",
    "trigger",
    "base_model",
    "steps",
    "resumed_from_step",
    "final_loss",
    "steps_per_second",
    "samples",
)


def run(ctx: NodeContext) -> dict[str, Any]:
    """Train (or reuse) the identity LoRA; see the module doc and ``capability.json``."""
    if "profile_id" in ctx.params:
        return reuse(ctx, ctx.params["profile_id"])
    photos = check_photos(ctx.inputs.get("photos"))
    from gpu_tasks import worker

    with worker.guarded(sizes(ctx.params, len(photos))):
        return train(ctx, photos)


def reuse(ctx: NodeContext, profile_id: str) -> dict[str, Any]:
    """A named profile: its LoRA, without training (and without loading a model)."""
    profile = lora_profile(ctx, profile_id)
    ctx.progress(1.0, f"reusing LoRA profile {profile.id}; nothing to train")
    output = {key: profile.data[key] for key in OUTPUT_KEYS if key in profile.data}
    return {"profile_id": profile.id, **output, "reused": True}


def sizes(params: dict[str, Any], photos: int) -> dict[str, Any]:
    return {
        "resolution": params.get("resolution", 512),
        "batch_size": params.get("batch_size", 1),
        "rank": params.get("rank", 16),
        "photos": photos,
        "gradient_checkpointing": params.get("gradient_checkpointing", False),
    }


def photo_limits() -> tuple[int, int]:
    """The fewest and most photos an identity LoRA takes (``capability.json``)."""
    count = get_registry().get("lora.train").input("photos").count
    assert count is not None
    return count


def check_photos(photos: object) -> list[dict[str, Any]]:
    if not isinstance(photos, list) or not all(
        isinstance(p, dict) and "artifact" in p for p in photos
    ):
        raise PermanentError("missing_input", "the photos input (a list of uploads) is missing")
    fewest, most = photo_limits()
    if not fewest <= len(photos) <= most:
        raise PermanentError(
            "bad_input",
            f"{len(photos)} photos given; {fewest} to {most} are needed",
            details={"photos": len(photos), "min": fewest, "max": most},
        )
    return photos


def train_config(params: dict[str, Any]) -> Any:
    from gpu_tasks.lora import TrainConfig

    return TrainConfig(
        trigger=params.get("trigger", "sks"),
        rank=params.get("rank", 16),
        alpha=params.get("alpha", 16),
        learning_rate=float(params.get("learning_rate", 1e-4)),
        resolution=params.get("resolution", 512),
        steps=params.get("steps", 1500),
        batch_size=params.get("batch_size", 1),
        seed=params.get("seed", 0),
        min_snr_gamma=params.get("min_snr_gamma"),
        gradient_checkpointing=params.get("gradient_checkpointing", False),
        use_8bit_adam=params.get("use_8bit_adam", False),
    )


def train(ctx: NodeContext, photos: list[dict[str, Any]]) -> dict[str, Any]:
    from PIL import UnidentifiedImageError

    from gpu_tasks import keyframe, loader, lora
    from gpu_tasks.device import get_device

    params = ctx.params
    config = train_config(params)
    captions = list(params.get("captions") or [])
    if captions and len(captions) != len(photos):
        raise PermanentError(
            "bad_input", f"{len(captions)} captions for {len(photos)} photos; give one each"
        )
    captions = captions or [lora.default_caption(config.trigger)] * len(photos)
    workdir = ctx.workdir
    assert workdir is not None, "the worker gives every attempt a workdir"

    ctx.progress(0.0, f"preparing {len(photos)} photos")
    images = []
    for number, ref in enumerate(photos):
        with ctx.artifacts.open(ref) as handle:
            data = handle.read()
        try:
            images.append(lora.prepare_image(data, config.resolution))
        except (UnidentifiedImageError, OSError) as error:
            raise PermanentError("bad_image", f"photo {number} cannot be read: {error}") from None

    model_ref = base_model(ctx)
    ctx.progress(0.01, f"loading {model_ref}")
    device = get_device()
    try:
        location = loader.resolve(model_ref)
        pipe = loader.load_sd_pipeline(model_ref, device)
    except loader.ModelUnavailable as error:
        raise PermanentError("model_unavailable", str(error)) from None
    model_hash = loader.fingerprint(location)

    ctx.progress(0.03, "encoding photos and captions")
    data = lora.encode_data(pipe, images, captions, device)
    resume = latest_checkpoint(ctx, config)
    samples: list[dict[str, Any]] = []
    steps = config.steps

    last_step_at = time.perf_counter()

    def on_step(step: int, loss: float) -> None:
        nonlocal last_step_at
        now = time.perf_counter()
        metrics.observe_lora_steps(1, now - last_step_at)
        last_step_at = now
        ctx.progress(0.05 + 0.9 * step / steps, f"step {step}/{steps} loss {loss:.4f}")

    def on_sample(step: int) -> None:
        request = keyframe.KeyframeRequest(
            prompt=captions[0],
            seed=config.seed,
            steps=params.get("sample_steps", 20),
            width=config.resolution,
            height=config.resolution,
        )
        image = keyframe.render(pipe, request, device)
        buffer = io.BytesIO()
        image.save(buffer, format="PNG")
        samples.append(ctx.artifacts.save(f"sample-{step:06d}.png", buffer.getvalue(), "image/png"))

    def on_checkpoint(checkpoint: Any) -> None:
        name = f"{CHECKPOINT_PREFIX}{checkpoint.step:06d}.pt"
        ctx.artifacts.save(name, checkpoint.to_bytes(), "application/octet-stream")
        for older in ctx.artifacts.saved(CHECKPOINT_PREFIX)[CHECKPOINTS_KEPT:]:
            ctx.artifacts.discard(older)

    try:
        with lora.LoraTrainer(pipe, config, device) as trainer:
            result = trainer.train(
                data,
                resume=resume,
                on_step=on_step,
                on_sample=on_sample,
                sample_every=params.get("sample_every", 250),
                on_checkpoint=on_checkpoint,
                checkpoint_every=params.get("checkpoint_every", 250),
            )
    except lora.OptionUnavailable as error:
        raise PermanentError("option_unavailable", str(error)) from None

    ctx.progress(0.97, "storing the LoRA")
    weights_path = lora.save_lora(workdir / "lora", result.lora, config)
    weights = ctx.artifacts.save(lora.LORA_FILE, weights_path, "application/octet-stream")
    base = {"id": model_ref, "sha256": model_hash}
    document = {
        "kind": "lora",
        "name": str(params.get("name", "")).strip(),
        "base_model": base,
        "trigger": config.trigger,
        "steps": result.steps,
        "rank": config.rank,
        "alpha": config.alpha,
        "resolution": config.resolution,
        "learning_rate": config.learning_rate,
        "photos": len(photos),
        "captions": sorted(set(captions)),
        "resumed_from_step": result.resumed_from,
        "loss_curve": thin(result.losses, LOSS_CURVE_POINTS),
    }
    metadata = ctx.artifacts.save(
        "lora.json", json.dumps(document, indent=2).encode(), "application/json"
    )
    output = {
        "lora": weights,
        "metadata": metadata,
        "trigger": config.trigger,
        "base_model": base,
        "steps": result.steps,
        "resumed_from_step": result.resumed_from,
        "final_loss": round(result.losses[-1], 6),
        "steps_per_second": round(result.steps_per_second, 4),
        "samples": samples,
    }
    assert ctx.profiles is not None
    profile_id = ctx.profiles.save("lora", document["name"], {**document, **output})
    ctx.progress(1.0, f"LoRA ready after {result.steps} steps")
    return {"profile_id": profile_id, **output}


def latest_checkpoint(ctx: NodeContext, config: Any) -> Any:
    """The newest checkpoint this node stored for the same configuration, or None."""
    from gpu_tasks.lora import Checkpoint

    for ref in ctx.artifacts.saved(CHECKPOINT_PREFIX):
        with ctx.artifacts.open(ref) as handle:
            checkpoint = Checkpoint.from_bytes(handle.read())
        if checkpoint.config == config.fingerprint() and checkpoint.step < config.steps:
            ctx.progress(0.04, f"resuming from the checkpoint at step {checkpoint.step}")
            return checkpoint
        logger.info("checkpoint %s is of another configuration; not resumed", ref.get("name"))
    return None


def thin(values: list[float], points: int) -> list[float]:
    """At most ``points`` values, evenly picked, the last one kept; rounded."""
    if len(values) > points:
        stride = len(values) / points
        values = [values[int(i * stride)] for i in range(points - 1)] + [values[-1]]
    return [round(v, 6) for v in values]
