"""Frames in and out of the artifact store for the GPU video services (no torch)."""

from __future__ import annotations

import io
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from apps.capabilities.context import NodeContext
from apps.capabilities.media import probe


def save_frames(ctx: NodeContext, frames: list[Image.Image], prefix: str) -> list[dict[str, Any]]:
    refs = []
    for number, frame in enumerate(frames):
        buffer = io.BytesIO()
        frame.save(buffer, format="PNG")
        refs.append(
            ctx.artifacts.save(f"{prefix}-{number:04d}.png", buffer.getvalue(), "image/png")
        )
    return refs


def load_frames(ctx: NodeContext, refs: list[dict[str, Any]]) -> list[Image.Image]:
    frames = []
    for ref in refs:
        with ctx.artifacts.open(ref) as handle:
            frames.append(probe.open_image(io.BytesIO(handle.read())).convert("RGB"))
    return frames


def write_clip(frames: list[Image.Image], fps: int, path: Path) -> Path:
    """A silent H.264 yuv420p MP4 of ``frames`` (sizes rounded down to even)."""
    width, height = frames[0].size
    width, height = width - width % 2, height - height % 2
    with av.open(str(path), "w", format="mp4") as container:
        stream = container.add_stream("libx264", rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            pixels = np.asarray(frame.convert("RGB").crop((0, 0, width, height)))
            for packet in stream.encode(av.VideoFrame.from_ndarray(pixels, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path
