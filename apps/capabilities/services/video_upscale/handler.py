"""video.upscale: frames, or a clip (an MP4 such as the talking head's), → (cached)
RRDBNet → larger frames, or the larger clip with the same audio. torch is imported
inside :func:`run`."""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import av
import numpy as np
from PIL import Image

from apps.capabilities.context import NodeContext
from apps.capabilities.services.gpu_frames import load_frames, save_frames
from myspinbot.errors import PermanentError


def find_source(ctx: NodeContext) -> tuple[str, Any]:
    """``("frames", refs)`` of a predecessor's frames or keyframes, else ``("video", ref)``
    of its clip."""
    for value in ctx.inputs.values():
        if isinstance(value, dict):
            for key in ("frames", "keyframes"):
                if isinstance(value.get(key), list) and value[key]:
                    return "frames", list(value[key])
    for value in ctx.inputs.values():
        if isinstance(value, dict) and isinstance(value.get("video"), dict):
            return "video", value
    raise PermanentError(
        "missing_input", "no frames: connect a node whose output has frames or a video"
    )


def clip_frames(path: Path, limit: int) -> tuple[Iterator[Image.Image], int, int, int]:
    """The frames of the MP4 at ``path`` (decoded as they are asked for), its frame
    count, frame rate and width; ``bad_video`` when it is not a readable video,
    ``too_many_frames`` past ``limit``."""
    try:
        container = av.open(
            str(path), format="mp4", container_options={"protocol_whitelist": "file"}
        )
    except av.FFmpegError as error:
        raise PermanentError("bad_video", f"cannot open the clip: {error}") from None
    if not container.streams.video:
        container.close()
        raise PermanentError("bad_video", "the clip has no video stream")
    stream = container.streams.video[0]
    count = int(stream.frames or 0)
    if count > limit:
        container.close()
        raise PermanentError("too_many_frames", f"{count} frames; at most {limit}")
    fps = round(float(stream.average_rate or 25))

    def frames() -> Iterator[Image.Image]:
        with container:
            try:
                for number, frame in enumerate(container.decode(stream)):
                    if number >= limit:
                        raise PermanentError("too_many_frames", f"more than {limit} frames")
                    yield frame.to_image()
            except av.FFmpegError as error:
                raise PermanentError("bad_video", f"cannot decode the clip: {error}") from None

    return frames(), count, fps, stream.codec_context.width


def _scaled_face(face: object, scale: int) -> dict[str, Any] | None:
    """A talking clip's face boxes in the larger clip's pixels (for video.compose)."""
    if not isinstance(face, dict):
        return None
    scaled = dict(face)
    for key in ("box", "mouth"):
        if isinstance(face.get(key), list):
            scaled[key] = [float(v) * scale for v in face[key]]
    for key in ("chin_y", "width_px"):
        if isinstance(face.get(key), int | float):
            scaled[key] = float(face[key]) * scale
    return scaled


def run(ctx: NodeContext) -> dict[str, Any]:
    """Upscale every frame; see ``capability.json``."""
    from gpu_tasks import loader, upscale, worker
    from gpu_tasks.device import get_device
    from gpu_tasks.model_cache import get_cache

    kind, source = find_source(ctx)
    limit = ctx.params.get("max_frames", 500)
    path = upscale.weights_path(loader.model_root())

    def network() -> Any:
        device = get_device()
        if not path.is_file():
            raise PermanentError("backend_unavailable", f"no upscaler weights at {path}")
        return get_cache().get(
            f"realesrgan:{path}:{device.dtype}",
            lambda: upscale.load_upscaler(path, device.torch_device, device.dtype),
            expected_bytes=path.stat().st_size,
        )

    if kind == "video":
        return _upscale_clip(ctx, source, limit, network)
    refs = source
    if len(refs) > limit:
        raise PermanentError("too_many_frames", f"{len(refs)} frames; at most {limit}")
    frames = load_frames(ctx, refs)
    with worker.guarded({"frames": len(frames), "width": frames[0].width}):
        model = network()
        larger = []
        for number, frame in enumerate(frames):
            larger.append(upscale.upscale(model, frame))
            ctx.progress(0.9 * (number + 1) / len(frames), f"frame {number + 1}/{len(frames)}")
    stored = save_frames(ctx, larger, "upscaled")
    ctx.progress(1.0, "frames upscaled")
    return {
        "frames": stored,
        "keyframes": stored,
        "scale": model.config.scale,
        "width": larger[0].width,
        "height": larger[0].height,
    }


def _upscale_clip(
    ctx: NodeContext,
    source: dict[str, Any],
    limit: int,
    network: Callable[[], Any],
) -> dict[str, Any]:
    """The clip's frames upscaled one at a time into an MP4 with the clip's audio."""
    from apps.capabilities.media import video
    from gpu_tasks import upscale, worker

    assert ctx.workdir is not None
    clip = ctx.artifacts.fetch(source["video"], ctx.workdir, "clip.mp4")
    frames, count, fps, width = clip_frames(clip, limit)
    audio = video.read_audio(clip)
    output = ctx.workdir / "upscaled.mp4"
    written = 0
    with worker.guarded({"frames": count, "width": width}):
        model = network()
        scale = model.config.scale
        first = next(frames, None)
        if first is None:
            raise PermanentError("bad_video", "the clip holds no frames")
        size = (first.width * scale // 2 * 2, first.height * scale // 2 * 2)
        settings = video.VideoSettings(width=size[0], height=size[1], fps=fps, crf=18)
        with video.Mp4Writer(output, settings, audio) as writer:
            for picture in itertools.chain([first], frames):
                pixels = np.asarray(upscale.upscale(model, picture))[: size[1], : size[0]]
                writer.write(av.VideoFrame.from_ndarray(pixels, format="rgb24"))
                written += 1
                if count:
                    ctx.progress(0.9 * min(1.0, written / count), f"frame {written}/{count}")
    stored = ctx.artifacts.save("upscaled.mp4", output, "video/mp4")
    ctx.progress(1.0, "clip upscaled")
    result: dict[str, Any] = {
        "video": stored,
        "scale": scale,
        "width": size[0],
        "height": size[1],
        "fps": fps,
        "frame_count": written,
    }
    face = _scaled_face(source.get("face"), scale)
    if face is not None:
        result["face"] = face
    return result
