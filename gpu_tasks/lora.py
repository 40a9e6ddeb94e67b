"""Identity LoRA training for an SD-1.5-family UNet.

photos → EXIF-aware load, face-friendly square crop, resize → latents and text embeddings
computed once → LoRA on the UNet's attention projections (peft ``LoraConfig`` through
``unet.add_adapter``) → AdamW at a constant learning rate on the noise-prediction loss,
optionally min-SNR weighted → ``pytorch_lora_weights.safetensors``.

The base pipeline comes from the model cache and is left as it was found: the adapter is
added for the run and deleted afterwards, gradient checkpointing switched off again.

Every random draw (batch order, latent sampling, noise, timesteps) comes from one seeded
CPU generator whose state is part of a :class:`Checkpoint`, so a run resumed from a
checkpoint continues the same sequence as if it had never stopped.
"""

from __future__ import annotations

import contextlib
import copy
import hashlib
import io
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from PIL import Image, ImageOps

from gpu_tasks.device import Device

TARGET_MODULES = ["to_q", "to_k", "to_v", "to_out.0"]
LORA_FILE = "pytorch_lora_weights.safetensors"
ADAPTER = "identity"
# Portraits are cropped below their top by this share of the extra height, so the face
# (usually in the upper half) stays in the square.
PORTRAIT_TOP_SHARE = 0.2


@dataclass(frozen=True)
class TrainConfig:
    """What a training run does; defaults are the service's."""

    trigger: str = "sks"
    rank: int = 16
    alpha: int = 16
    learning_rate: float = 1e-4
    resolution: int = 512
    steps: int = 1500
    batch_size: int = 1
    seed: int = 0
    min_snr_gamma: float | None = None
    gradient_checkpointing: bool = False
    use_8bit_adam: bool = False

    def fingerprint(self) -> str:
        """Identifies the training trajectory: a checkpoint resumes only the same one."""
        text = json.dumps(asdict(self), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]


class OptionUnavailable(RuntimeError):
    """An option needs a package this worker lacks (8-bit AdamW needs bitsandbytes)."""


# --- Data -------------------------------------------------------------------------------


def face_friendly_crop(image: Image.Image) -> Image.Image:
    """The largest square: centred across, and for a portrait, near the top (faces)."""
    width, height = image.size
    side = min(width, height)
    left = (width - side) // 2
    top = int((height - side) * PORTRAIT_TOP_SHARE) if height > width else (height - side) // 2
    return image.crop((left, top, left + side, top + side))


def prepare_image(source: bytes | Path, resolution: int) -> Image.Image:
    """Decode, turn upright by EXIF orientation, crop square and resize to ``resolution``."""
    return prepare_image_from(
        # Only the plug-ins of the image kinds uploads accept (apps.capabilities.media.probe).
        Image.open(
            io.BytesIO(source) if isinstance(source, bytes) else source,
            formats=("PNG", "JPEG", "WEBP"),
        ),
        resolution,
    )


def prepare_image_from(raw: Image.Image, resolution: int) -> Image.Image:
    upright = ImageOps.exif_transpose(raw) or raw
    square = face_friendly_crop(upright.convert("RGB"))
    return square.resize((resolution, resolution), Image.Resampling.LANCZOS)


def default_caption(trigger: str) -> str:
    return f"photo of {trigger} person"


def image_tensor(images: list[Image.Image]) -> torch.Tensor:
    """RGB images as a float batch in [-1, 1], channels first."""
    import numpy as np

    array = np.stack([np.asarray(image, dtype=np.float32) / 127.5 - 1.0 for image in images])
    return torch.from_numpy(array).permute(0, 3, 1, 2).contiguous()


@dataclass
class TrainingData:
    """Per photo: its latent distribution (mean, std) and its caption's text embedding."""

    latent_mean: torch.Tensor
    latent_std: torch.Tensor
    embeddings: torch.Tensor

    def __len__(self) -> int:
        return int(self.latent_mean.shape[0])


def encode_prompts(pipe: Any, prompts: list[str], device: Device) -> torch.Tensor:
    tokens = pipe.tokenizer(
        prompts,
        padding="max_length",
        max_length=pipe.tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids.to(device.torch_device)
    with torch.no_grad():
        return pipe.text_encoder(tokens)[0]


def encode_data(
    pipe: Any, images: list[Image.Image], captions: list[str], device: Device
) -> TrainingData:
    """Run the VAE and the text encoder once over the whole set (the cache of a run)."""
    means, stds = [], []
    with torch.no_grad():
        for image in images:
            pixels = image_tensor([image]).to(device.torch_device, pipe.vae.dtype)
            dist = pipe.vae.encode(pixels).latent_dist
            means.append(dist.mean.float())
            stds.append(dist.std.float())
    embeddings = encode_prompts(pipe, captions, device)
    return TrainingData(torch.cat(means), torch.cat(stds), embeddings)


# --- Checkpoints ------------------------------------------------------------------------


@dataclass
class Checkpoint:
    """Everything a run needs to continue: LoRA weights, optimizer, step, RNG, losses."""

    step: int
    config: str
    lora: dict[str, torch.Tensor]
    optimizer: dict[str, Any]
    generator: torch.Tensor
    losses: list[float] = field(default_factory=list)

    def to_bytes(self) -> bytes:
        buffer = io.BytesIO()
        torch.save(asdict(self), buffer)
        return buffer.getvalue()

    @classmethod
    def from_bytes(cls, data: bytes) -> Checkpoint:
        state = torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
        return cls(**state)


# --- Training -----------------------------------------------------------------------------


@dataclass
class TrainResult:
    lora: dict[str, torch.Tensor]  # diffusers format, what ``load_lora_weights`` reads
    losses: list[float]
    steps: int
    resumed_from: int
    seconds: float

    @property
    def steps_per_second(self) -> float:
        done = self.steps - self.resumed_from
        return done / self.seconds if self.seconds > 0 else 0.0


StepCallback = Callable[[int, float], None]
SampleCallback = Callable[[int], None]
CheckpointCallback = Callable[[Checkpoint], None]


def min_snr_weights(scheduler: Any, timesteps: torch.Tensor, gamma: float) -> torch.Tensor:
    from diffusers.training_utils import compute_snr

    snr = compute_snr(scheduler, timesteps)
    weights = torch.clamp(snr, max=gamma) / snr
    if scheduler.config.prediction_type == "v_prediction":
        weights = torch.clamp(snr, max=gamma) / (snr + 1)
    return weights


class LoraTrainer:
    """Trains a LoRA on ``pipe.unet`` in place; use as a context manager so the adapter is
    removed from the (cached) pipeline whatever happens."""

    def __init__(self, pipe: Any, config: TrainConfig, device: Device) -> None:
        from diffusers import DDPMScheduler

        self.pipe, self.config, self.device = pipe, config, device
        self.unet = pipe.unet
        self.noise_scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
        self.generator = torch.Generator("cpu").manual_seed(config.seed)
        self.optimizer: Any = None
        self.parameters: list[torch.nn.Parameter] = []

    def __enter__(self) -> LoraTrainer:
        from peft import LoraConfig

        lora_config = LoraConfig(
            r=self.config.rank,
            lora_alpha=self.config.alpha,
            init_lora_weights="gaussian",
            target_modules=TARGET_MODULES,
        )
        torch.manual_seed(self.config.seed)  # peft's gaussian init draws from the global RNG
        self.unet.add_adapter(lora_config, adapter_name=ADAPTER)
        self.unet.set_adapter(ADAPTER)
        self.parameters = []
        for name, parameter in self.unet.named_parameters():
            trainable = "lora_" in name
            parameter.requires_grad_(trainable)
            if trainable:
                parameter.data = parameter.data.float()  # fp32 master weights for the LoRA
                self.parameters.append(parameter)
        if self.config.gradient_checkpointing:
            self.unet.enable_gradient_checkpointing()
        self.optimizer = self._optimizer()
        return self

    def __exit__(self, *_: object) -> None:
        self.unet.eval()
        if self.config.gradient_checkpointing:
            self.unet.disable_gradient_checkpointing()
        # Adapters are only ever added for one task, so removing every LoRA layer puts the
        # cached UNet back exactly as it was loaded.
        self.unet.unload_lora()
        self.unet.requires_grad_(False)
        self.optimizer = None

    def _optimizer(self) -> Any:
        optimizer_class: Any = torch.optim.AdamW
        if self.config.use_8bit_adam:
            try:
                import bitsandbytes as bnb
            except ImportError:
                raise OptionUnavailable("8-bit AdamW needs the bitsandbytes package") from None
            optimizer_class = bnb.optim.AdamW8bit
        return optimizer_class(
            self.parameters,
            lr=self.config.learning_rate,
            betas=(0.9, 0.999),
            weight_decay=1e-2,
            eps=1e-8,
        )

    def lora_state(self) -> dict[str, torch.Tensor]:
        """The adapter's weights in peft form (for checkpoints)."""
        from peft.utils import get_peft_model_state_dict

        state = get_peft_model_state_dict(self.unet, adapter_name=ADAPTER)
        return {
            key: value.detach().to("cpu", torch.float32).clone() for key, value in state.items()
        }

    def diffusers_lora_state(self) -> dict[str, torch.Tensor]:
        from diffusers.utils import convert_state_dict_to_diffusers

        return dict(convert_state_dict_to_diffusers(self.lora_state()))

    def restore(self, checkpoint: Checkpoint) -> None:
        from peft.utils import set_peft_model_state_dict

        set_peft_model_state_dict(self.unet, checkpoint.lora, adapter_name=ADAPTER)
        for parameter in self.parameters:
            parameter.data = parameter.data.float()
        self.optimizer.load_state_dict(checkpoint.optimizer)
        self.generator.set_state(checkpoint.generator)

    def checkpoint(self, step: int, losses: list[float]) -> Checkpoint:
        return Checkpoint(
            step=step,
            config=self.config.fingerprint(),
            lora=self.lora_state(),
            optimizer=copy.deepcopy(self.optimizer.state_dict()),  # not the live tensors
            generator=self.generator.get_state(),
            losses=list(losses),
        )

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.device.is_cuda and self.device.dtype != torch.float32:
            return torch.autocast("cuda", dtype=self.device.dtype)
        return contextlib.nullcontext()

    def loss(self, data: TrainingData) -> torch.Tensor:
        """One batch's loss: pick photos, sample latents, noise them, predict the noise."""
        config, generator, device = self.config, self.generator, self.device.torch_device
        index = torch.randint(0, len(data), (config.batch_size,), generator=generator)
        mean, std = data.latent_mean[index], data.latent_std[index]
        latents = mean + std * torch.randn(mean.shape, generator=generator)
        latents = (latents * self.pipe.vae.config.scaling_factor).to(device)
        noise = torch.randn(latents.shape, generator=generator).to(device)
        steps = self.noise_scheduler.config.num_train_timesteps
        timesteps = torch.randint(0, steps, (config.batch_size,), generator=generator).to(device)
        noisy = self.noise_scheduler.add_noise(latents, noise, timesteps)
        if self.noise_scheduler.config.prediction_type == "v_prediction":
            target = self.noise_scheduler.get_velocity(latents, noise, timesteps)
        else:
            target = noise
        embeddings = data.embeddings[index.to(data.embeddings.device)]
        with self._autocast():
            prediction = self.unet(
                noisy.to(self.unet.dtype), timesteps, embeddings.to(self.unet.dtype)
            ).sample
        if config.min_snr_gamma is None:
            return F.mse_loss(prediction.float(), target.float())
        per_item = F.mse_loss(prediction.float(), target.float(), reduction="none")
        per_item = per_item.mean(dim=list(range(1, per_item.ndim)))
        weights = min_snr_weights(self.noise_scheduler, timesteps, config.min_snr_gamma)
        return (per_item * weights.to(per_item.device)).mean()

    def train(
        self,
        data: TrainingData,
        *,
        resume: Checkpoint | None = None,
        on_step: StepCallback | None = None,
        on_sample: SampleCallback | None = None,
        sample_every: int = 0,
        on_checkpoint: CheckpointCallback | None = None,
        checkpoint_every: int = 0,
    ) -> TrainResult:
        """Train to ``config.steps``; ``on_step(step, loss)`` after every step (it may raise
        to stop, e.g. on cancel), ``on_sample(step)`` every ``sample_every`` steps and
        ``on_checkpoint`` every ``checkpoint_every`` steps (not after the last)."""
        start_step, losses = 0, []
        if resume is not None:
            if resume.config != self.config.fingerprint():
                raise ValueError("the checkpoint belongs to another training configuration")
            self.restore(resume)
            start_step, losses = resume.step, list(resume.losses)
        started = time.perf_counter()
        self.unet.train()
        for step in range(start_step + 1, self.config.steps + 1):
            loss = self.loss(data)
            loss.backward()
            self.optimizer.step()
            self.optimizer.zero_grad(set_to_none=True)
            losses.append(float(loss.detach()))
            if on_step is not None:
                on_step(step, losses[-1])
            last = step == self.config.steps
            if on_sample is not None and sample_every and step % sample_every == 0:
                self.unet.eval()
                on_sample(step)
                self.unet.train()
            due = checkpoint_every and step % checkpoint_every == 0
            if on_checkpoint is not None and due and not last:
                on_checkpoint(self.checkpoint(step, losses))
        seconds = time.perf_counter() - started
        self.unet.eval()
        return TrainResult(
            lora=self.diffusers_lora_state(),
            losses=losses,
            steps=self.config.steps,
            resumed_from=start_step,
            seconds=seconds,
        )


def save_lora(folder: Path, lora: dict[str, torch.Tensor], config: TrainConfig) -> Path:
    """Write ``pytorch_lora_weights.safetensors`` (diffusers format) into ``folder``."""
    from diffusers import StableDiffusionPipeline

    folder.mkdir(parents=True, exist_ok=True)
    StableDiffusionPipeline.save_lora_weights(
        folder,
        unet_lora_layers=lora,
        safe_serialization=True,
        unet_lora_adapter_metadata={
            "r": config.rank,
            "lora_alpha": config.alpha,
            "target_modules": TARGET_MODULES,
        },
    )
    return folder / LORA_FILE


def lead_with_trigger(prompt: str, lora: Path | None, trigger: str) -> str:
    """The prompt, led by the LoRA's trigger phrase when a LoRA is applied and the prompt
    does not hold the trigger yet."""
    if lora is not None and trigger and trigger not in prompt:
        return f"photo of {trigger} person, {prompt}"
    return prompt


@contextlib.contextmanager
def lora_applied(pipe: Any, path: Path | None, weight: float, name: str) -> Iterator[None]:
    """``pipe`` with the LoRA at ``path`` loaded at ``weight`` for the block; removed after
    (every LoRA layer: the cached pipelines carry adapters only while a task runs)."""
    if path is None:
        yield
        return
    pipe.load_lora_weights(str(path.parent), weight_name=path.name, adapter_name=name)
    try:
        pipe.set_adapters([name], adapter_weights=[weight])
        yield
    finally:
        pipe.unload_lora_weights()  # back to the modules as loaded, for the next task
