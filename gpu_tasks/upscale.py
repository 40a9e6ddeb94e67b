"""Upscaling frames with a Real-ESRGAN-style network (RRDBNet), frames → frames.

The network is the ESRGAN generator: a 3x3 convolution, residual-in-residual dense blocks,
a trunk convolution, two nearest-neighbour ×2 upsampling stages and two output
convolutions. Its parameter names follow the published Real-ESRGAN checkpoints, so
``RealESRGAN_x4plus.pth`` (weights under ``params_ema`` or ``params``) loads as is. The
backend is available only when that file is under the model root; there is no fallback.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

WEIGHTS = Path("realesrgan") / "RealESRGAN_x4plus.pth"


@dataclass(frozen=True)
class RRDBConfig:
    """Sizes of the network; the defaults are RealESRGAN_x4plus's. ``config.json`` next to
    the weights overrides them."""

    num_feat: int = 64
    num_block: int = 23
    num_grow_ch: int = 32
    scale: int = 4


class ResidualDenseBlock(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(num_feat, num_grow_ch, 3, 1, 1)
        self.conv2 = nn.Conv2d(num_feat + num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv3 = nn.Conv2d(num_feat + 2 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv4 = nn.Conv2d(num_feat + 3 * num_grow_ch, num_grow_ch, 3, 1, 1)
        self.conv5 = nn.Conv2d(num_feat + 4 * num_grow_ch, num_feat, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        features = [x]
        for conv in (self.conv1, self.conv2, self.conv3, self.conv4):
            features.append(self.lrelu(conv(torch.cat(features, 1))))
        return self.conv5(torch.cat(features, 1)) * 0.2 + x


class RRDB(nn.Module):
    def __init__(self, num_feat: int, num_grow_ch: int) -> None:
        super().__init__()
        self.rdb1 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb2 = ResidualDenseBlock(num_feat, num_grow_ch)
        self.rdb3 = ResidualDenseBlock(num_feat, num_grow_ch)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.rdb3(self.rdb2(self.rdb1(x))) * 0.2 + x


class RRDBNet(nn.Module):
    """The ×4 (or ×2) ESRGAN generator."""

    def __init__(self, config: RRDBConfig = RRDBConfig()) -> None:
        super().__init__()
        if config.scale not in (2, 4):
            raise ValueError("scale must be 2 or 4")
        self.config = config
        feat = config.num_feat
        self.conv_first = nn.Conv2d(3, feat, 3, 1, 1)
        self.body = nn.Sequential(
            *(RRDB(feat, config.num_grow_ch) for _ in range(config.num_block))
        )
        self.conv_body = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up1 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_up2 = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_hr = nn.Conv2d(feat, feat, 3, 1, 1)
        self.conv_last = nn.Conv2d(feat, 3, 3, 1, 1)
        self.lrelu = nn.LeakyReLU(0.2, inplace=True)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feat = self.conv_first(x)
        feat = feat + self.conv_body(self.body(feat))
        feat = self.lrelu(self.conv_up1(F.interpolate(feat, scale_factor=2, mode="nearest")))
        if self.config.scale == 4:
            feat = self.lrelu(self.conv_up2(F.interpolate(feat, scale_factor=2, mode="nearest")))
        return self.conv_last(self.lrelu(self.conv_hr(feat)))


def weights_path(root: Path) -> Path:
    return root / WEIGHTS


def save_upscaler(model: RRDBNet, path: Path) -> Path:
    """Write weights the way the published checkpoints hold them, with a config.json."""
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({"params_ema": model.state_dict()}, path)
    (path.parent / "config.json").write_text(json.dumps(asdict(model.config)))
    return path


def load_upscaler(path: Path, device: torch.device, dtype: torch.dtype) -> RRDBNet:
    """The network with the weights at ``path``; ``FileNotFoundError`` when missing."""
    if not path.is_file():
        raise FileNotFoundError(f"upscaler weights not found at {path}")
    config_file = path.parent / "config.json"
    config = (
        RRDBConfig(**json.loads(config_file.read_text())) if config_file.is_file() else RRDBConfig()
    )
    state: dict[str, Any] = torch.load(path, map_location="cpu", weights_only=True)
    for key in ("params_ema", "params"):
        if key in state:
            state = state[key]
            break
    model = RRDBNet(config)
    model.load_state_dict(state, strict=True)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


def upscale(model: RRDBNet, image: Image.Image) -> Image.Image:
    """One RGB image, ``scale`` times larger on each side."""
    parameter = next(model.parameters())
    array = np.asarray(image.convert("RGB"), dtype=np.float32) / 255.0
    tensor = torch.from_numpy(array).permute(2, 0, 1).unsqueeze(0)
    with torch.no_grad():
        out = model(tensor.to(parameter.device, parameter.dtype)).float().clamp(0, 1)
    pixels = (out[0].permute(1, 2, 0).cpu().numpy() * 255.0).round().astype(np.uint8)
    return Image.fromarray(pixels)
