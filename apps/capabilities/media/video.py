"""Composing a narrated video: still images with a slow pan/zoom, burned-in captions and
the narration, encoded to an H.264/AAC MP4 with PyAV's bundled ffmpeg.

The pipeline is ``check_image`` / ``read_audio`` (validate inputs, raising
:class:`~myspinbot.errors.PermanentError`) → :func:`compose` (prepare each image
once → render every frame → encode). It is built for speed on a few CPU cores:

- each image is cropped, scaled and converted to BT.709 YUV planes once, at the size the
  strongest zoom needs, so a frame is three cheap crop-and-resize calls on 8-bit planes
  (no per-frame colour conversion);
- a caption is drawn once per cue into a small premultiplied overlay and blended into the
  bottom band of the frames it covers;
- frames are rendered on a worker thread (Pillow releases the GIL) while x264 encodes on
  its own threads.
"""

from __future__ import annotations

import io
import math
from collections import deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, replace
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import Any

import av
import cv2
import numpy as np
from django.conf import settings
from PIL import Image, ImageDraw, ImageFont, ImageOps, UnidentifiedImageError

from apps.capabilities.media import audio as loudness
from apps.capabilities.media import probe
from myspinbot.errors import PermanentError

AAC_FRAME_SAMPLES = 1024
AAC_RATES = frozenset(av.codec.Codec("aac", "w").audio_rates or ())
AAC_FALLBACK_RATE = 48000
# Each image is shown for at least this long; extra images are left out.
MIN_SECONDS_PER_IMAGE = 2.0
# Cross-fade between images: at most this long, and at most a third of an image's time.
CROSSFADE_SECONDS = 1.0
# How far an image may be wider or taller than the frame, relative to the frame's aspect,
# before the rest is cropped away: the margin the pan moves across.
PAN_ASPECT_SLACK = 1.35
# Where the picture's centre of interest is assumed (fractions of width, height): a bit
# above the middle, where faces are in portraits.
FOCUS = (0.5, 0.4)
# Frames rendered ahead of the encoder, and threads rendering them.
RENDER_AHEAD = 8
RENDER_THREADS = 2

ProgressFn = Callable[[float, str], None]
Box = tuple[float, float, float, float]


@dataclass(frozen=True)
class VideoSettings:
    """Output size (even numbers), frame rate, pan/zoom strength and encoder settings."""

    width: int
    height: int
    fps: int
    zoom: float = 1.1
    captions: bool = True
    crf: int = 23
    preset: str = "veryfast"


@dataclass(frozen=True)
class Cue:
    """A caption shown from ``start`` (inclusive) to ``end`` (exclusive), in seconds."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Audio:
    """Decoded audio: float32 planar samples shaped (channels, samples), 1 or 2 channels."""

    samples: np.ndarray
    rate: int

    @property
    def layout(self) -> str:
        return "mono" if self.samples.shape[0] == 1 else "stereo"

    @property
    def duration(self) -> float:
        return float(self.samples.shape[1]) / self.rate


@dataclass(frozen=True)
class Composition:
    """What :func:`compose` made: frame count, duration, the poster JPEG, captions shown."""

    frames: int
    duration_seconds: float
    poster_jpeg: bytes
    captions: int


# --- Inputs -----------------------------------------------------------------------------


def check_image(path: Path, *, min_side: int) -> tuple[int, int]:
    """Return ``(width, height)`` read from the image header, without decoding the pixels.

    Raises ``PermanentError`` ``bad_image`` when it is not an image Pillow reads,
    ``image_too_small`` when a side is under ``min_side`` (the calling service's
    contract, its ``capability.json``), and
    ``image_too_large`` when a side is over ``MYSPINBOT_MAX_IMAGE_SIDE`` or it has more
    than ``MYSPINBOT_MAX_IMAGE_PIXELS`` pixels.
    """
    try:
        with probe.open_image(path) as image:
            width, height = image.size
    except Image.DecompressionBombError as exc:
        raise PermanentError("image_too_large", f"image is too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PermanentError("bad_image", f"cannot read the image: {exc}") from None
    max_side = settings.MYSPINBOT_MAX_IMAGE_SIDE
    max_pixels = settings.MYSPINBOT_MAX_IMAGE_PIXELS
    details = {"width": width, "height": height}
    if min(width, height) < min_side:
        raise PermanentError(
            "image_too_small",
            f"image is {width}x{height} px; each side must be at least {min_side} px",
            details=details,
        )
    if max(width, height) > max_side or width * height > max_pixels:
        raise PermanentError(
            "image_too_large",
            f"image is {width}x{height} px; the limit is {max_side} px a side and "
            f"{max_pixels} pixels",
            details=details,
        )
    return width, height


def read_audio(path: Path) -> Audio:
    """Decode the first audio stream of ``path`` to float32 planar samples.

    Keeps the sample rate when AAC supports it (else resamples to 48 kHz) and mixes more
    than two channels down to stereo. Raises ``PermanentError`` ``bad_audio`` when the
    file has no decodable audio and ``empty_audio`` when it holds no samples, and the
    errors of :mod:`~apps.capabilities.media.probe` (containers and codecs not allowed,
    bounds, time limits).
    """
    try:
        with probe.open_audio(path) as opened:
            rate = opened.info.rate if opened.info.rate in AAC_RATES else AAC_FALLBACK_RATE
            channels = opened.info.channels
            resampler = av.AudioResampler(
                format="fltp", layout="mono" if channels == 1 else "stereo", rate=rate
            )
            chunks: list[np.ndarray] = []
            for frame in probe.decoded_frames(opened):
                chunks.extend(out.to_ndarray() for out in resampler.resample(frame))
            chunks.extend(out.to_ndarray() for out in resampler.resample(None))
    except av.FFmpegError as exc:
        raise PermanentError("bad_audio", f"cannot decode the narration: {exc}") from None
    if not chunks or sum(chunk.shape[1] for chunk in chunks) == 0:
        raise PermanentError("empty_audio", "the narration holds no audio samples")
    samples = np.ascontiguousarray(np.concatenate(chunks, axis=1), dtype=np.float32)
    return Audio(samples=samples, rate=rate)


# --- Images -----------------------------------------------------------------------------


@dataclass(frozen=True)
class Motion:
    """A pan/zoom: the crop's zoom and centre (fractions of the margin) at start and end."""

    zoom_from: float
    zoom_to: float
    centre_from: tuple[float, float]
    centre_to: tuple[float, float]

    @classmethod
    def for_image(cls, index: int, zoom: float) -> Motion:
        """Alternate zooming in and out, and the pan direction, from one image to the next."""
        side = 1 if index % 2 == 0 else -1
        start = (FOCUS[0] - 0.2 * side, FOCUS[1] + 0.1)
        end = (FOCUS[0] + 0.2 * side, FOCUS[1] - 0.1)
        if index % 2 == 0:
            return cls(1.0, zoom, start, end)
        return cls(zoom, 1.0, start, end)


class Plate:
    """One image, prepared for fast framing: BT.709 limited-range Y, U, V planes.

    Planes are scaled so the full frame at ``video.zoom`` maps one plate pixel to one
    output pixel (``cover`` plate pixels per output pixel at zoom 1). With ``poster``,
    ``poster_jpeg`` holds the first frame (``progress`` 0) as a JPEG, drawn from the RGB
    image before it is dropped.
    """

    def __init__(
        self, path: Path, video: VideoSettings, motion: Motion, *, poster: bool = False
    ) -> None:
        self.video = video
        self.motion = motion
        rgb = _load_rgb(path, video)
        self.width, self.height = rgb.size
        self.cover = min(self.width / video.width, self.height / video.height)
        y, u, v = _rgb_to_yuv420(np.asarray(rgb))
        self.y = Image.fromarray(y)
        self.u = Image.fromarray(u)
        self.v = Image.fromarray(v)
        self.poster_jpeg = self._poster(rgb) if poster else None

    def box(self, progress: float) -> Box:
        """The crop (left, top, right, bottom in plate pixels) at ``progress`` 0..1."""
        eased = 0.5 - 0.5 * math.cos(math.pi * min(1.0, max(0.0, progress)))
        motion = self.motion
        zoom = motion.zoom_from + (motion.zoom_to - motion.zoom_from) * eased
        crop_w = self.video.width * self.cover / zoom
        crop_h = self.video.height * self.cover / zoom
        fx = motion.centre_from[0] + (motion.centre_to[0] - motion.centre_from[0]) * eased
        fy = motion.centre_from[1] + (motion.centre_to[1] - motion.centre_from[1]) * eased
        left = (self.width - crop_w) * fx
        top = (self.height - crop_h) * fy
        # Clamped: at zoom 1 the crop spans the whole plate, give or take a rounding error.
        return (
            max(0.0, left),
            max(0.0, top),
            min(float(self.width), left + crop_w),
            min(float(self.height), top + crop_h),
        )

    def render(self, progress: float) -> np.ndarray:
        """The yuv420p frame at ``progress``: a (height * 3 / 2, width) uint8 array."""
        width, height = self.video.width, self.video.height
        box = self.box(progress)
        half = (box[0] / 2, box[1] / 2, box[2] / 2, box[3] / 2)
        frame = np.empty((height * 3 // 2, width), np.uint8)
        flat = frame.reshape(-1)
        luma, chroma = width * height, (width // 2) * (height // 2)
        flat[:luma] = np.asarray(
            self.y.resize((width, height), Image.Resampling.BILINEAR, box=box)
        ).ravel()
        size = (width // 2, height // 2)
        flat[luma : luma + chroma] = np.asarray(
            self.u.resize(size, Image.Resampling.BILINEAR, box=half)
        ).ravel()
        flat[luma + chroma :] = np.asarray(
            self.v.resize(size, Image.Resampling.BILINEAR, box=half)
        ).ravel()
        return frame

    def _poster(self, rgb: Image.Image) -> bytes:
        image = rgb.resize(
            (self.video.width, self.video.height), Image.Resampling.BICUBIC, box=self.box(0.0)
        )
        buffer = io.BytesIO()
        image.save(buffer, format="JPEG", quality=90)
        return buffer.getvalue()


def _load_rgb(path: Path, video: VideoSettings) -> Image.Image:
    """Decode, orient and crop the image to the pan margin, scaled for ``video.zoom``."""
    frame_aspect = video.width / video.height
    try:
        with probe.open_image(path) as opened:
            width, height = opened.size
            needed = video.zoom * max(video.width / width, video.height / height)
            if needed < 0.5 and opened.format == "JPEG":
                # Let libjpeg scale while decoding (by 1/2..1/8): much faster for big photos.
                opened.draft("RGB", (math.ceil(width * needed), math.ceil(height * needed)))
            image = ImageOps.exif_transpose(opened)
            image.load()
    except Image.DecompressionBombError as exc:
        raise PermanentError("image_too_large", f"image is too large: {exc}") from None
    except (UnidentifiedImageError, OSError, SyntaxError, ValueError) as exc:
        raise PermanentError("bad_image", f"cannot decode the image: {exc}") from None
    image = _flatten(image)
    # Crop an image much wider or taller than the frame down to the margin the pan uses.
    width, height = image.size
    aspect = width / height
    if aspect > frame_aspect * PAN_ASPECT_SLACK:
        keep = round(height * frame_aspect * PAN_ASPECT_SLACK)
        left = round((width - keep) * FOCUS[0])
        image = image.crop((left, 0, left + keep, height))
    elif aspect < frame_aspect / PAN_ASPECT_SLACK:
        keep = round(width / frame_aspect * PAN_ASPECT_SLACK)
        top = round((height - keep) * FOCUS[1])
        image = image.crop((0, top, width, top + keep))
    width, height = image.size
    scale = video.zoom * max(video.width / width, video.height / height)
    target = (_even_ceil(width * scale), _even_ceil(height * scale))
    return image.resize(target, Image.Resampling.LANCZOS, reducing_gap=3.0)


def _flatten(image: Image.Image) -> Image.Image:
    """RGB, with any transparency composited over black."""
    if image.mode in ("RGBA", "LA", "PA") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        background = Image.new("RGB", rgba.size, (0, 0, 0))
        background.paste(rgba, mask=rgba.getchannel("A"))
        return background
    return image.convert("RGB")


def _even_ceil(value: float) -> int:
    return 2 * math.ceil(value / 2 - 1e-9)


def _rgb_to_yuv420(rgb: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """BT.709 limited range: Y at full size, U and V averaged over 2x2 blocks."""
    pixels = rgb.astype(np.float32)
    red, green, blue = pixels[..., 0], pixels[..., 1], pixels[..., 2]
    y = 16.0 + (0.2126 * red + 0.7152 * green + 0.0722 * blue) * (219.0 / 255.0)
    u = 128.0 + (-0.1146 * red - 0.3854 * green + 0.5 * blue) * (224.0 / 255.0)
    v = 128.0 + (0.5 * red - 0.4542 * green - 0.0458 * blue) * (224.0 / 255.0)
    return _to_u8(y), _to_u8(_quarter(u)), _to_u8(_quarter(v))


def _quarter(plane: np.ndarray) -> np.ndarray:
    height, width = plane.shape
    blocks = plane.reshape(height // 2, 2, width // 2, 2)
    result: np.ndarray = blocks.mean(axis=(1, 3))
    return result


def _to_u8(plane: np.ndarray) -> np.ndarray:
    return np.clip(plane + 0.5, 0, 255).astype(np.uint8)


# --- Captions -----------------------------------------------------------------------------


@lru_cache(maxsize=8)
def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def wrap_text(
    text: str, font: ImageFont.FreeTypeFont | ImageFont.ImageFont, max_width: float
) -> list[str]:
    """Break ``text`` into lines no wider than ``max_width`` (a longer word is split)."""
    lines: list[str] = []
    for paragraph in text.splitlines():
        line = ""
        for word in paragraph.split():
            candidate = f"{line} {word}" if line else word
            if font.getlength(candidate) <= max_width:
                line = candidate
                continue
            if line:
                lines.append(line)
            while font.getlength(word) > max_width and len(word) > 1:
                cut = len(word) - 1
                while cut > 1 and font.getlength(word[:cut]) > max_width:
                    cut -= 1
                lines.append(word[:cut])
                word = word[cut:]
            line = word
        if line:
            lines.append(line)
    return lines


class CaptionOverlay:
    """One cue's caption, drawn once: white text with a dark outline on a translucent dark
    box, bottom centre, as premultiplied Y/U/V planes with 0..256 coverage."""

    MAX_LINES = 4

    def __init__(
        self, text: str, width: int, height: int, keep_clear: tuple[float, float] | None = None
    ) -> None:
        """``keep_clear``: a vertical span (top, bottom px) the caption must not cover (a
        face's mouth and chin): the caption moves from the bottom to the top of the frame
        when the bottom would cover it."""
        size = max(12, round(height * 0.05))
        font = _font(size)
        pad_x, pad_y = round(size * 0.6), round(size * 0.3)
        lines = wrap_text(text, font, width * 0.9 - 2 * pad_x)
        if len(lines) > self.MAX_LINES:
            lines = [*lines[: self.MAX_LINES - 1], lines[self.MAX_LINES - 1] + " ..."]
        line_height = round(size * 1.25)
        box_w = min(width, _even_ceil(max(font.getlength(line) for line in lines) + 2 * pad_x))
        box_h = min(height, _even_ceil(len(lines) * line_height + 2 * pad_y))
        self.left = (width - box_w) // 2 // 2 * 2
        self.top = max(0, (height - round(height * 0.06) - box_h) // 2 * 2)
        if keep_clear is not None and self.top < keep_clear[1] and self.top + box_h > keep_clear[0]:
            self.top = round(height * 0.04) // 2 * 2
        self.width, self.height = box_w, box_h

        canvas = Image.new("RGBA", (box_w, box_h), (0, 0, 0, 0))
        draw = ImageDraw.Draw(canvas)
        draw.rounded_rectangle((0, 0, box_w - 1, box_h - 1), radius=pad_y, fill=(0, 0, 0, 150))
        stroke = max(1, size // 14)
        for number, line in enumerate(lines):
            draw.text(
                (box_w / 2, pad_y + number * line_height + (line_height - size) / 2),
                line,
                font=font,
                fill=(255, 255, 255, 255),
                anchor="mt",
                stroke_width=stroke,
                stroke_fill=(0, 0, 0, 255),
            )
        pixels = np.asarray(canvas).astype(np.float32)
        alpha = pixels[..., 3] / 255.0
        premultiplied = pixels[..., :3] * alpha[..., None]
        y, u, v = _yuv_from_premultiplied(premultiplied, alpha)
        coverage = np.rint(alpha * 256.0)
        chroma_coverage = np.rint(_quarter(alpha) * 256.0)
        self.y_over = np.rint(y * 256.0).astype(np.uint16)
        self.u_over = np.rint(u * 256.0).astype(np.uint16)
        self.v_over = np.rint(v * 256.0).astype(np.uint16)
        self.y_keep = (256 - coverage).astype(np.uint16)
        self.uv_keep = (256 - chroma_coverage).astype(np.uint16)

    def apply(self, frame: np.ndarray, width: int, height: int) -> None:
        """Blend the caption into a yuv420p frame array in place."""
        flat = frame.reshape(-1)
        luma = flat[: width * height].reshape(height, width)
        chroma = (width // 2) * (height // 2)
        planes = (
            (luma, self.y_over, self.y_keep, 1),
            (
                flat[width * height : width * height + chroma].reshape(height // 2, width // 2),
                self.u_over,
                self.uv_keep,
                2,
            ),
            (
                flat[width * height + chroma :].reshape(height // 2, width // 2),
                self.v_over,
                self.uv_keep,
                2,
            ),
        )
        for plane, over, keep, step in planes:
            top, left = self.top // step, self.left // step
            region = plane[top : top + over.shape[0], left : left + over.shape[1]]
            region[...] = (region.astype(np.uint16) * keep + over + 128) >> 8


def _yuv_from_premultiplied(
    premultiplied: np.ndarray, alpha: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Premultiplied BT.709 limited-range Y (full size) and U, V (2x2 averaged)."""
    red, green, blue = premultiplied[..., 0], premultiplied[..., 1], premultiplied[..., 2]
    y = 16.0 * alpha + (0.2126 * red + 0.7152 * green + 0.0722 * blue) * (219.0 / 255.0)
    u = 128.0 * alpha + (-0.1146 * red - 0.3854 * green + 0.5 * blue) * (224.0 / 255.0)
    v = 128.0 * alpha + (0.5 * red - 0.4542 * green - 0.0458 * blue) * (224.0 / 255.0)
    return y, _quarter(u), _quarter(v)


def caption_frames(cues: Sequence[Cue], frames: int, fps: int) -> np.ndarray:
    """For each frame, the index of the cue shown (-1 for none).

    Frame ``i`` (at ``i / fps`` s) shows a cue when ``start <= i / fps < end``; where cues
    overlap, the later one in the list wins.
    """
    shown = np.full(frames, -1, dtype=np.int64)
    for index, cue in enumerate(cues):
        if not cue.text.strip():
            continue
        first = max(0, math.ceil(cue.start * fps - 1e-9))
        stop = min(frames, math.ceil(cue.end * fps - 1e-9))
        if stop > first:
            shown[first:stop] = index
    return shown


# --- Timeline -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Layer:
    """What one image contributes to a frame: its index, its motion progress, its weight."""

    image: int
    progress: float
    weight: float


def timeline(images: int, duration: float, t: float) -> list[Layer]:
    """The images visible at ``t`` seconds: one, or two while cross-fading.

    Each image gets an equal share of ``duration``; neighbours cross-fade over
    ``min(CROSSFADE_SECONDS, share / 3)`` centred on their boundary, and each image's
    motion runs over the whole time it is visible.
    """
    share = duration / images
    fade = min(CROSSFADE_SECONDS, share / 3) if images > 1 else 0.0

    def progress(index: int) -> float:
        begin = max(0.0, index * share - fade / 2)
        end = min(duration, (index + 1) * share + fade / 2)
        return (t - begin) / (end - begin) if end > begin else 0.0

    current = min(images - 1, max(0, int(t // share)))
    if current > 0 and t < current * share + fade / 2:
        previous, following = current - 1, current
    elif current < images - 1 and t >= (current + 1) * share - fade / 2:
        previous, following = current, current + 1
    else:
        return [Layer(current, progress(current), 1.0)]
    weight = (t - (following * share - fade / 2)) / fade
    weight = min(1.0, max(0.0, weight))
    return [
        Layer(previous, progress(previous), 1.0 - weight),
        Layer(following, progress(following), weight),
    ]


def _render(
    layers: list[tuple[Plate, float, float]],
    overlay: CaptionOverlay | None,
    video: VideoSettings,
    pts: int,
) -> av.VideoFrame:
    """Render one frame (cross-fade, caption) and wrap it for the encoder."""
    (plate, progress, _), *rest = layers
    frame = plate.render(progress)
    if rest:
        other, other_progress, weight = rest[0]
        mix = round(weight * 256)
        blend = frame.astype(np.uint16) * (256 - mix)
        blend += other.render(other_progress).astype(np.uint16) * mix
        frame = ((blend + 128) >> 8).astype(np.uint8)
    if overlay is not None:
        overlay.apply(frame, video.width, video.height)
    # Zero-copy: the frame keeps the array alive until the encoder is done with it.
    result = av.VideoFrame.from_numpy_buffer(frame, format="yuv420p")
    result.pts = pts
    return result


# --- Encoding -------------------------------------------------------------------------------


class Mp4Writer:
    """An H.264 yuv420p (BT.709, limited range) + AAC MP4 with ``+faststart``: frames go in
    with :meth:`write`, and the narration is interleaved as the frames cover it; leaving
    the ``with`` block flushes both encoders and writes the rest of the audio."""

    def __init__(self, output: Path, video: VideoSettings, audio: Audio) -> None:
        self.video, self.audio = video, audio
        self.out = av.open(str(output), "w", format="mp4", options={"movflags": "+faststart"})
        stream = self.out.add_stream("libx264", rate=Fraction(video.fps))
        stream.width, stream.height = video.width, video.height
        stream.pix_fmt = "yuv420p"
        stream.options = {"preset": video.preset, "crf": str(video.crf)}
        context = stream.codec_context
        context.thread_count = 0
        # Tag what the planes hold: BT.709 (ffmpeg's value 1 in each table), limited range.
        context.color_range = 1
        context.colorspace = 1
        context.color_primaries = 1
        context.color_trc = 1
        self.video_stream = stream
        self.audio_stream = _add_aac_stream(self.out, audio)
        self.audio_sent = 0
        self.written = 0

    def __enter__(self) -> Mp4Writer:
        return self

    def __exit__(self, kind: object, error: object, trace: object) -> None:
        try:
            if kind is None:
                self.out.mux(self.video_stream.encode(None))
                self._send_audio(self.audio.duration + 1.0)
                self.out.mux(self.audio_stream.encode(None))
        finally:
            self.out.close()

    def write(self, frame: av.VideoFrame) -> None:
        """Encode the next frame (its ``pts`` is set here) and the audio it covers."""
        frame.pts = self.written
        self.out.mux(self.video_stream.encode(frame))
        self.written += 1
        self._send_audio(self.written / self.video.fps)

    def _send_audio(self, until_seconds: float) -> None:
        until = min(self.audio.samples.shape[1], math.ceil(until_seconds * self.audio.rate))
        self.audio_sent = _send_aac(self.out, self.audio_stream, self.audio, self.audio_sent, until)


def _add_aac_stream(out: Any, audio: Audio) -> Any:
    """The narration's AAC stream in ``out``: the one setting of the encoder, shared by the
    video and by :func:`master_audio`'s trial encodes, so that both code the same."""
    stream = out.add_stream("aac", rate=audio.rate)
    stream.layout = audio.layout
    # 64 kb/s a channel (plenty for speech), within what AAC allows at low rates.
    stream.bit_rate = audio.samples.shape[0] * min(64_000, audio.rate * 6)
    return stream


def _send_aac(out: Any, stream: Any, audio: Audio, sent: int, until: int) -> int:
    """Encode and mux ``audio``'s samples from ``sent`` to ``until`` in AAC-frame chunks;
    returns how many are sent."""
    while sent < until:
        chunk = audio.samples[:, sent : sent + AAC_FRAME_SAMPLES]
        frame = av.AudioFrame.from_ndarray(
            np.ascontiguousarray(chunk), format="fltp", layout=audio.layout
        )
        frame.sample_rate = audio.rate
        frame.pts = sent
        frame.time_base = Fraction(1, audio.rate)
        out.mux(stream.encode(frame))
        sent += chunk.shape[1]
    return sent


# --- The final mix ------------------------------------------------------------------------

# The delivered MP4's audio: EBU R128's -16 LUFS (speech on the web) with its true peak,
# measured on the DECODED AAC (4x oversampled), at or under -1 dBTP. The AAC encoder
# overshoots the true peak it is given (measured on our narrations: by 0.3 to 1.4 dB, a
# -2.04 dBTP WAV decoding at -0.66), so the ceiling given to the limiter is found by
# encoding the audio alone: each trial lowers it by the overshoot it measured (plus a
# step), until the decoded peak is under the ceiling.
MIX_LUFS = -16.0
MIX_CEILING_DBTP = -1.0
MIX_TRIALS = 4
MIX_STEP_DB = 0.1


@dataclass(frozen=True)
class Mix:
    """What :func:`master_audio` measured on the decoded AAC of the levelled audio."""

    lufs: float | None
    true_peak_dbtp: float | None
    limiter_ceiling_dbtp: float  # the ceiling the samples were limited to before encoding
    trials: int


def master_audio(audio: Audio) -> tuple[Audio, Mix]:
    """``audio`` levelled to :data:`MIX_LUFS` with a limiter whose ceiling keeps the true
    peak of its AAC encode (as :class:`Mp4Writer` makes it) under
    :data:`MIX_CEILING_DBTP`, found by trial encodes of the audio alone (see above).
    Silence comes back unchanged."""
    ceiling = MIX_CEILING_DBTP
    levelled, decoded = audio, None
    for trial in range(1, MIX_TRIALS + 1):
        levelled = _level(audio, ceiling)
        decoded = decode_aac(encode_aac(levelled))
        peak = _peak_dbtp(decoded.samples)
        if peak is None or peak <= MIX_CEILING_DBTP or trial == MIX_TRIALS:
            break
        ceiling -= peak - MIX_CEILING_DBTP + MIX_STEP_DB
    assert decoded is not None
    lufs = loudness.integrated_loudness(decoded.samples.T, decoded.rate)
    return levelled, Mix(lufs, _peak_dbtp(decoded.samples), ceiling, trial)


def _level(audio: Audio, ceiling_dbtp: float) -> Audio:
    """Mono: :func:`loudness.normalize_loudness` (gain, look-ahead limiter). Stereo: one
    static gain to the loudness, or less where the true peak would pass the ceiling."""
    if audio.samples.shape[0] == 1:
        levelled, _ = loudness.normalize_loudness(
            audio.samples[0], audio.rate, MIX_LUFS, ceiling_dbtp
        )
        return Audio(np.ascontiguousarray(levelled[None, :], dtype=np.float32), audio.rate)
    lufs = loudness.integrated_loudness(audio.samples.T, audio.rate)
    peak = _peak_dbtp(audio.samples)
    if lufs is None or peak is None:
        return audio
    gain_db = min(MIX_LUFS - lufs, ceiling_dbtp - peak)
    scaled = audio.samples * np.float32(10 ** (gain_db / 20))
    return Audio(np.ascontiguousarray(scaled, dtype=np.float32), audio.rate)


def _peak_dbtp(samples: np.ndarray) -> float | None:
    return loudness.to_dbtp(max(loudness.true_peak(channel) for channel in samples))


def encode_aac(audio: Audio) -> bytes:
    """``audio`` alone in an MP4, coded as the video's audio is (:func:`_add_aac_stream`)."""
    buffer = io.BytesIO()
    with av.open(buffer, "w", format="mp4") as out:
        stream = _add_aac_stream(out, audio)
        _send_aac(out, stream, audio, 0, audio.samples.shape[1])
        out.mux(stream.encode(None))
    return buffer.getvalue()


def decode_aac(data: bytes) -> Audio:
    """The first audio stream of an MP4 in memory, decoded to float32 planar samples."""
    with av.open(io.BytesIO(data), "r") as opened:
        stream = opened.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in opened.decode(stream)]
        rate = stream.codec_context.sample_rate
    samples = np.concatenate(chunks, axis=1) if chunks else np.zeros((1, 0), np.float32)
    return Audio(np.ascontiguousarray(samples, dtype=np.float32), rate)


# --- A talking clip ---------------------------------------------------------------------------

# How much of the frame's width the face takes, by frame shape (wide, square, tall).
FACE_SHARE = {"wide": 0.30, "square": 0.40, "tall": 0.55}
# Where the chin sits, as a fraction of the frame height from the top.
CHIN_AT = {"wide": 0.62, "square": 0.62, "tall": 0.56}
# The crop is scaled up at most this much (a small face gets more of the frame around it).
MAX_UPSCALE = 2.0


@dataclass(frozen=True)
class Framing:
    """A crop of the clip (even px) and the span, in output px, the captions keep clear."""

    box: tuple[int, int, int, int]
    keep_clear: tuple[float, float]


def face_framing(
    clip_width: int, clip_height: int, face: dict[str, Any], width: int, height: int
) -> Framing:
    """The crop of a talking clip that frames its face for a ``width`` × ``height`` output:
    the face at a share of the width that suits the frame's shape, the chin at a fixed
    height, all within the clip; and the mouth-to-chin span captions must leave clear."""
    aspect = width / height
    shape = "wide" if aspect > 1.2 else "tall" if aspect < 0.83 else "square"
    left_f, _top_f, right_f, _ = (float(v) for v in face["box"])
    mouth_top = float(face["mouth"][1])
    chin = float(face["chin_y"])
    face_w = max(1.0, right_f - left_f)
    crop_w = max(face_w / FACE_SHARE[shape], width / MAX_UPSCALE)
    crop_h = crop_w / aspect
    fit = min(1.0, clip_width / crop_w, clip_height / crop_h)
    crop_w, crop_h = crop_w * fit, crop_h * fit
    left = (left_f + right_f) / 2 - crop_w / 2
    top = chin - CHIN_AT[shape] * crop_h
    left = min(max(0.0, left), clip_width - crop_w)
    top = min(max(0.0, top), clip_height - crop_h)
    box = (
        int(left) // 2 * 2,
        int(top) // 2 * 2,
        min(clip_width, _even_ceil(left + crop_w)),
        min(clip_height, _even_ceil(top + crop_h)),
    )
    scale = height / (box[3] - box[1])
    margin = 0.08 * face_w  # the sway, and the jaw dropping past the chin line
    keep_clear = ((mouth_top - margin - box[1]) * scale, (chin + 2 * margin - box[1]) * scale)
    return Framing(box=box, keep_clear=keep_clear)


def _framed(
    planes: np.ndarray,
    clip_w: int,
    clip_h: int,
    box: tuple[int, int, int, int],
    video: VideoSettings,
) -> np.ndarray:
    """Crop and scale one decoded yuv420p frame to the output frame (yuv420p array)."""
    width, height = video.width, video.height
    left, top, right, bottom = box
    flat = planes.reshape(-1)
    luma, chroma = clip_w * clip_h, (clip_w // 2) * (clip_h // 2)
    y = flat[:luma].reshape(clip_h, clip_w)
    u = flat[luma : luma + chroma].reshape(clip_h // 2, clip_w // 2)
    v = flat[luma + chroma : luma + 2 * chroma].reshape(clip_h // 2, clip_w // 2)
    frame = np.empty((height * 3 // 2, width), np.uint8)
    out = frame.reshape(-1)
    size = width * height
    quarter = (width // 2) * (height // 2)
    out[:size] = cv2.resize(
        y[top:bottom, left:right], (width, height), interpolation=cv2.INTER_CUBIC
    ).ravel()
    half = (width // 2, height // 2)
    crop = (slice(top // 2, bottom // 2), slice(left // 2, right // 2))
    out[size : size + quarter] = cv2.resize(u[crop], half, interpolation=cv2.INTER_LINEAR).ravel()
    out[size + quarter :] = cv2.resize(v[crop], half, interpolation=cv2.INTER_LINEAR).ravel()
    return frame


def compose_talking(
    clip: Path,
    face: dict[str, Any],
    audio: Audio,
    cues: Sequence[Cue],
    video: VideoSettings,
    output: Path,
    progress: ProgressFn,
) -> Composition:
    """Write the MP4 at ``output`` from a talking-head clip (``lipsync.sync``): each clip
    frame cropped around the face (:func:`face_framing`) and scaled to the output size,
    captions kept off the mouth, the narration as its audio, exactly as long as it."""
    duration = audio.duration
    frames = max(1, round(duration * video.fps))
    shown = caption_frames(cues, frames, video.fps) if video.captions else np.full(frames, -1)
    poster: bytes | None = None
    overlay: tuple[int, CaptionOverlay] | None = None
    try:
        source = av.open(str(clip))
    except av.FFmpegError as exc:
        raise PermanentError("bad_video", f"cannot open the talking clip: {exc}") from None
    with source, Mp4Writer(output, video, audio) as writer:
        if not source.streams.video:
            raise PermanentError("bad_video", "the talking clip has no video stream")
        stream = source.streams.video[0]
        clip_w, clip_h = stream.codec_context.width, stream.codec_context.height
        clip_fps = float(stream.average_rate or video.fps)
        framing = face_framing(clip_w, clip_h, face, video.width, video.height)
        decoded = source.decode(stream)
        current: np.ndarray | None = None
        shown_clip = -1
        for index in range(frames):
            wanted = math.floor(index * clip_fps / video.fps + 1e-9)
            while shown_clip < wanted:
                try:
                    picture = next(decoded)
                except StopIteration:
                    break  # a clip shorter than the narration holds its last frame
                except av.FFmpegError as exc:
                    raise PermanentError(
                        "bad_video", f"cannot decode the talking clip: {exc}"
                    ) from None
                shown_clip += 1
                if shown_clip == wanted or current is None:
                    planes = picture.to_ndarray(format="yuv420p")
                    current = _framed(planes, clip_w, clip_h, framing.box, video)
            if current is None:
                raise PermanentError("bad_video", "the talking clip holds no frames")
            frame = current.copy()
            if poster is None:
                picture_out = av.VideoFrame.from_ndarray(frame, format="yuv420p")
                buffer = io.BytesIO()
                picture_out.to_image().save(buffer, format="JPEG", quality=90)
                poster = buffer.getvalue()
            cue = int(shown[index])
            if cue >= 0:
                if overlay is None or overlay[0] != cue:
                    overlay = (
                        cue,
                        CaptionOverlay(
                            cues[cue].text, video.width, video.height, framing.keep_clear
                        ),
                    )
                overlay[1].apply(frame, video.width, video.height)
            writer.write(av.VideoFrame.from_numpy_buffer(frame, format="yuv420p"))
            if writer.written % video.fps == 0:
                progress(writer.written / frames, f"encoded {writer.written} of {frames} frames")
    captions = len({int(cue) for cue in shown if cue >= 0})
    assert poster is not None
    return Composition(
        frames=frames, duration_seconds=duration, poster_jpeg=poster, captions=captions
    )


# --- Composition --------------------------------------------------------------------------


def images_to_use(available: int, duration: float) -> int:
    """How many of ``available`` images fit: at least ``MIN_SECONDS_PER_IMAGE`` each."""
    return max(1, min(available, int(duration // MIN_SECONDS_PER_IMAGE)))


# A clip's frames are shown as they are: no pan or zoom over them.
STILL = Motion(1.0, 1.0, FOCUS, FOCUS)


def clip_frame(index: int, fps: int, clip_frames: int, clip_fps: float) -> int:
    """The clip frame shown at output frame ``index``: the clip plays at its own rate
    and loops until the narration ends."""
    return math.floor(index * clip_fps / fps + 1e-9) % clip_frames


def compose(
    images: Sequence[Path],
    audio: Audio,
    cues: Sequence[Cue],
    video: VideoSettings,
    output: Path,
    progress: ProgressFn,
    *,
    clip_fps: float | None = None,
) -> Composition:
    """Write the MP4 at ``output``: the images panned and zoomed (cross-faded when there
    are several) for exactly the narration's length, captions from ``cues`` when
    ``video.captions``, H.264 yuv420p + AAC, ``+faststart``.

    With ``clip_fps``, ``images`` are the frames of one animated clip instead: each is
    shown whole (scaled to cover the frame, no pan or zoom) at the clip's own frame rate,
    and the clip loops to cover the narration (:func:`clip_frame`).

    ``images`` should already have passed :func:`check_image`; the ones
    :func:`images_to_use` leaves out are ignored (all of them are used for a clip).
    ``progress(fraction, message)`` is called about once per second of video; whatever it
    raises (``Cancelled``) stops the encoding and propagates.
    """
    duration = audio.duration
    frames = max(1, round(duration * video.fps))
    count = len(images) if clip_fps else images_to_use(len(images), duration)
    shown = caption_frames(cues, frames, video.fps) if video.captions else np.full(frames, -1)
    motion = (lambda index: STILL) if clip_fps else (lambda i: Motion.for_image(i, video.zoom))
    # A clip's plates need no margin for a zoom: they are smaller and quicker to prepare.
    framing = replace(video, zoom=1.0) if clip_fps else video
    first = Plate(images[0], framing, motion(0), poster=True)
    assert first.poster_jpeg is not None
    poster = first.poster_jpeg
    plates: dict[int, Plate] = {0: first}
    del first

    def plate(index: int) -> Plate:
        if index not in plates:
            plates[index] = Plate(images[index], framing, motion(index))
        return plates[index]

    with Mp4Writer(output, video, audio) as writer:
        overlay: tuple[int, CaptionOverlay] | None = None
        pending: deque[Future[av.VideoFrame]] = deque()
        executor = ThreadPoolExecutor(RENDER_THREADS, thread_name_prefix="video-render")

        def write_one() -> None:
            writer.write(pending.popleft().result())
            if writer.written % video.fps == 0:
                progress(writer.written / frames, f"encoded {writer.written} of {frames} frames")

        try:
            for index in range(frames):
                if clip_fps:
                    # Every clip frame comes back when it loops: its plate is kept.
                    visible = [Layer(clip_frame(index, video.fps, count, clip_fps), 0.0, 1.0)]
                else:
                    visible = timeline(count, duration, index / video.fps)
                    for stale in [key for key in plates if key < visible[0].image]:
                        del plates[stale]  # rendering jobs keep their own reference
                layers = [(plate(layer.image), layer.progress, layer.weight) for layer in visible]
                cue = int(shown[index])
                if cue < 0:
                    current = None
                else:
                    if overlay is None or overlay[0] != cue:
                        overlay = (cue, CaptionOverlay(cues[cue].text, video.width, video.height))
                    current = overlay[1]
                pending.append(executor.submit(_render, layers, current, video, index))
                if len(pending) >= RENDER_AHEAD:
                    write_one()
            while pending:
                write_one()
        finally:
            for future in pending:
                future.cancel()
            executor.shutdown(wait=True, cancel_futures=True)
    captions = len({int(cue) for cue in shown if cue >= 0})
    return Composition(
        frames=frames, duration_seconds=duration, poster_jpeg=poster, captions=captions
    )
