"""MuseTalk (v1.5) lip-sync: a portrait's face crop re-drawn at the mouth for each video
frame of the narration, in one UNet pass per frame (no denoising loop).

The shape of MuseTalk's inference, on the diffusers and transformers classes its weights
are published for:

1. **Audio.** The narration at 16 kHz, in 30 s windows, through Whisper-tiny's encoder
   (``WhisperModel``); every hidden state (the embeddings and each layer) is kept, 50 per
   second. Video frame ``i`` gets the features of its own audio and of two frames either
   side (10 Whisper steps × 5 states = 50 tokens of 384), plus a sinusoidal position code.
2. **Face.** The face crop, resized to 256², is encoded by the SD VAE twice: with its
   lower half masked (zeros) and whole (the reference); the latents are concatenated
   (8 channels in).
3. **UNet.** ``UNet2DConditionModel`` at timestep 0, cross-attending to the frame's
   audio tokens, predicts the crop's latents; the VAE decodes them.
4. **Paste.** Only the mouth region goes back into the portrait, weighted by a feathered
   mask; every pixel outside it is the portrait's.

The face crop, the mouth box and its mask come from the CPU lip-sync's face mesh
(``apps.capabilities.media.mouth_region``); this module sees only arrays.

On disk (MuseTalk's own ``models/`` layout, under ``<model root>/musetalk``)::

    musetalkV15/musetalk.json   UNet config        musetalkV15/unet.pth   UNet state dict
    sd-vae/                     AutoencoderKL      whisper/               WhisperModel +
                                                                           preprocessor_config.json
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from gpu_tasks.device import Device

FOLDER = Path("musetalk")
UNET_CONFIG = Path("musetalkV15") / "musetalk.json"
UNET_WEIGHTS = Path("musetalkV15") / "unet.pth"
VAE = Path("sd-vae")
WHISPER = Path("whisper")
CROP = 256
AUDIO_RATE = 16_000
WHISPER_STEPS_PER_SECOND = 50
WINDOW_SECONDS = 30
# Video frames of audio context on each side of a frame's own.
PAD_LEFT, PAD_RIGHT = 2, 2

Progress = Callable[[float, str], None]
Box = tuple[int, int, int, int]


def folder(root: Path) -> Path:
    return root / FOLDER


def _has_weights(directory: Path) -> bool:
    return any(
        (directory / name).is_file() and (directory / name).stat().st_size > 0
        for name in (
            "diffusion_pytorch_model.safetensors",
            "diffusion_pytorch_model.bin",
            "model.safetensors",
            "pytorch_model.bin",
        )
    )


def weights_present(root: Path) -> bool:
    """Whether every file MuseTalk loads is under ``root``/musetalk (non-empty)."""
    base = folder(root)
    files = [
        base / UNET_CONFIG,
        base / UNET_WEIGHTS,
        base / VAE / "config.json",
        base / WHISPER / "config.json",
        base / WHISPER / "preprocessor_config.json",
    ]
    return (
        all(f.is_file() and f.stat().st_size > 0 for f in files)
        and _has_weights(base / VAE)
        and _has_weights(base / WHISPER)
    )


@dataclass
class MuseTalk:
    """The loaded components, ready on one device."""

    vae: Any  # diffusers AutoencoderKL
    unet: Any  # diffusers UNet2DConditionModel, 8 channels in
    whisper: Any  # transformers WhisperEncoder
    features: Any  # transformers WhisperFeatureExtractor
    device: Device

    @property
    def components(self) -> dict[str, torch.nn.Module]:
        """The modules (what the model cache sizes)."""
        return {"vae": self.vae, "unet": self.unet, "whisper": self.whisper}


def load(location: Path, device: Device) -> MuseTalk:
    """The components of the MuseTalk folder ``location`` on ``device``, in its dtype."""
    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperFeatureExtractor, WhisperModel

    config = json.loads((location / UNET_CONFIG).read_text())
    unet: Any = UNet2DConditionModel(**config)
    state = torch.load(location / UNET_WEIGHTS, map_location="cpu", weights_only=True)
    unet.load_state_dict(state, strict=True)
    vae = AutoencoderKL.from_pretrained(location / VAE)
    whisper = WhisperModel.from_pretrained(location / WHISPER).get_encoder()
    features = WhisperFeatureExtractor.from_pretrained(location / WHISPER)
    for module in (unet, vae, whisper):
        module.to(device=device.torch_device, dtype=device.dtype).eval().requires_grad_(False)
    return MuseTalk(vae=vae, unet=unet, whisper=whisper, features=features, device=device)


def positional_encoding(tokens: torch.Tensor) -> torch.Tensor:
    """``tokens`` (batch, length, width) plus MuseTalk's sinusoidal position code."""
    _, length, width = tokens.shape
    position = torch.arange(length, dtype=torch.float32, device=tokens.device)[:, None]
    scale = torch.exp(
        torch.arange(0, width, 2, dtype=torch.float32, device=tokens.device)
        * (-math.log(10000.0) / width)
    )
    code = torch.zeros(length, width, device=tokens.device)
    code[:, 0::2] = torch.sin(position * scale)
    code[:, 1::2] = torch.cos(position * scale)
    return tokens + code.to(tokens.dtype)[None]


@torch.no_grad()
def whisper_states(model: MuseTalk, samples: np.ndarray) -> torch.Tensor:
    """Every hidden state of the encoder over 16 kHz mono ``samples``:
    (steps at 50/s, states, width), in 30 s windows."""
    window = WINDOW_SECONDS * AUDIO_RATE
    parts = []
    for start in range(0, max(1, len(samples)), window):
        piece = samples[start : start + window]
        inputs = model.features(
            piece, sampling_rate=AUDIO_RATE, return_tensors="pt"
        ).input_features.to(model.device.torch_device, model.device.dtype)
        hidden = model.whisper(inputs, output_hidden_states=True).hidden_states
        steps = math.ceil(len(piece) / AUDIO_RATE * WHISPER_STEPS_PER_SECOND)
        parts.append(torch.stack(hidden, dim=2)[0, :steps])
    return torch.cat(parts)


def frame_tokens(states: torch.Tensor, frames: int, fps: int) -> torch.Tensor:
    """The audio tokens of each video frame: (frames, window × states, width)."""
    per_frame = WHISPER_STEPS_PER_SECOND / fps
    pad = math.ceil(per_frame)
    left, right = pad * PAD_LEFT, pad * 3 * PAD_RIGHT
    padded = F.pad(states, (0, 0, 0, 0, left, right))
    length = 2 * (PAD_LEFT + PAD_RIGHT + 1)
    windows = [padded[int(i * per_frame) : int(i * per_frame) + length] for i in range(frames)]
    stacked = torch.stack(windows)  # frames, window, states, width
    return stacked.reshape(frames, -1, stacked.shape[-1])


def _to_unit(pixels: np.ndarray, device: Device) -> torch.Tensor:
    tensor = torch.from_numpy(np.ascontiguousarray(pixels)).permute(2, 0, 1)[None]
    return (tensor.to(device.torch_device, torch.float32) / 127.5 - 1.0).to(device.dtype)


@torch.no_grad()
def face_latents(model: MuseTalk, face: np.ndarray) -> torch.Tensor:
    """The UNet's input for a 256² RGB face: masked latents ‖ reference latents."""
    masked = face.copy()
    masked[CROP // 2 :] = 0
    scale = model.vae.config.scaling_factor
    latents = [
        model.vae.encode(_to_unit(image, model.device)).latent_dist.mode() * scale
        for image in (masked, face)
    ]
    return torch.cat(latents, dim=1)


@torch.no_grad()
def render(
    model: MuseTalk,
    image: np.ndarray,
    crop: Box,
    mouth: Box,
    mask: np.ndarray,
    samples: np.ndarray,
    fps: int,
    progress: Progress,
    batch: int = 16,
) -> Iterator[np.ndarray]:
    """The frames (RGB uint8, the portrait's size) of ``image`` speaking ``samples``
    (16 kHz mono), one per ``1/fps`` s: the generated crop pasted into ``mouth`` (a box
    inside ``crop``) with weight ``mask`` (its size)."""
    left, top, right, bottom = crop
    m_left, m_top, m_right, m_bottom = mouth
    if not (left <= m_left < m_right <= right and top <= m_top < m_bottom <= bottom):
        raise ValueError(f"the mouth box {mouth} is not inside the face crop {crop}")
    if mask.shape != (m_bottom - m_top, m_right - m_left):
        raise ValueError(f"mask {mask.shape} does not fit the mouth box {mouth}")
    import cv2

    face = cv2.resize(image[top:bottom, left:right], (CROP, CROP), interpolation=cv2.INTER_AREA)
    latents = face_latents(model, face)
    frames = max(1, round(len(samples) / AUDIO_RATE * fps))
    tokens = frame_tokens(whisper_states(model, samples), frames, fps)
    timestep = torch.zeros(1, device=model.device.torch_device, dtype=torch.long)
    scale = model.vae.config.scaling_factor
    weight = mask[..., None].astype(np.float32)
    original = image[m_top:m_bottom, m_left:m_right].astype(np.float32)
    for start in range(0, frames, batch):
        audio = positional_encoding(tokens[start : start + batch])
        predicted = model.unet(
            latents.expand(len(audio), -1, -1, -1), timestep, encoder_hidden_states=audio
        ).sample
        decoded = model.vae.decode(predicted / scale).sample
        faces = ((decoded.float() / 2 + 0.5).clamp(0, 1) * 255).round().to(torch.uint8)
        for generated in faces.permute(0, 2, 3, 1).cpu().numpy():
            full = cv2.resize(generated, (right - left, bottom - top))
            inside = full[m_top - top : m_bottom - top, m_left - left : m_right - left]
            out = image.copy()
            blended = original * (1.0 - weight) + inside.astype(np.float32) * weight
            out[m_top:m_bottom, m_left:m_right] = np.clip(blended.round(), 0, 255).astype(np.uint8)
            yield out
        done = min(frames, start + batch)
        progress(done / frames, f"lip-synced {done} of {frames} frames")
