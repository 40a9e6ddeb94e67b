"""Opening untrusted media: an allow-list of containers and codecs, no network, a time
limit, and bounds on how much may be decoded.

FFmpeg reads far more than audio files: an SDP description opens RTP sockets, an HLS
playlist or a DASH manifest fetches URLs, ``concat`` reads other local files. Which
demuxer runs is decided by probing the bytes (and, for HLS, the file name), so a file
that sniffs as MP3 can still be opened as something else. Every audio file a user
supplied is therefore opened here, from a path (never a Python file object, whose name
would be the client's), with

- ``protocol_whitelist=file``: a demuxer cannot open a URL, only the file itself;
- ``format_whitelist`` set to the demuxers of :data:`AUDIO_FORMATS`, and the demuxer
  forced when the caller knows the sniffed content type;
- the first audio stream's codec checked against that container's allow-list;
- PyAV's ``timeout`` on the open and every read, and a wall-clock deadline on decoding
  (``MYSPINBOT_MEDIA_OPEN_SECONDS``, ``MYSPINBOT_MEDIA_DECODE_SECONDS``);
- the duration, and duration × rate × channels, checked from the header before any
  decoding and counted again while decoding, which stops as soon as a bound is passed
  (``MYSPINBOT_MAX_AUDIO_SECONDS``, ``MYSPINBOT_MAX_AUDIO_SAMPLES``).

Images are opened with Pillow restricted to :data:`IMAGE_FORMATS` (no EPS, PSD, ...
plug-ins) and ``Image.MAX_IMAGE_PIXELS`` set from ``MYSPINBOT_MAX_IMAGE_PIXELS`` in every
process (see ``apps.capabilities.apps``).

Errors are :class:`~myspinbot.errors.PermanentError`: ``bad_audio`` (not readable
audio), ``unsupported_audio`` (a container or codec not on the list), ``audio_too_long``
(a bound passed) and ``media_timeout``.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import av
from django.conf import settings
from PIL import Image

from myspinbot.errors import PermanentError

PCM_CODECS = frozenset(
    {
        "pcm_u8",
        "pcm_s16le",
        "pcm_s24le",
        "pcm_s32le",
        "pcm_f32le",
        "pcm_f64le",
        "pcm_alaw",
        "pcm_mulaw",
    }
)


@dataclass(frozen=True)
class AudioFormat:
    """A container we read: FFmpeg's demuxer for it and the codecs allowed inside."""

    demuxer: str
    codecs: frozenset[str]


# Keyed by the content type sniffed from the bytes (the upload kinds in settings).
AUDIO_FORMATS: dict[str, AudioFormat] = {
    "audio/x-wav": AudioFormat("wav", PCM_CODECS),
    "audio/mpeg": AudioFormat("mp3", frozenset({"mp3"})),
    "audio/x-flac": AudioFormat("flac", frozenset({"flac"})),
    "audio/ogg": AudioFormat("ogg", frozenset({"vorbis", "opus", "flac"})),
    "audio/mp4": AudioFormat("mov", frozenset({"aac", "alac"})),
    "video/webm": AudioFormat("matroska", frozenset({"opus", "vorbis"})),
}
FORMAT_WHITELIST = ",".join(sorted({f.demuxer for f in AUDIO_FORMATS.values()}))

# Pillow's names for the image kinds uploads accept (png, jpeg, webp).
IMAGE_FORMATS = ("PNG", "JPEG", "WEBP")


@dataclass(frozen=True)
class AudioInfo:
    """What the header of an allowed audio file says."""

    container: str
    codec: str
    rate: int
    channels: int
    duration: float | None  # seconds; None when the container does not say

    def to_json(self) -> dict[str, Any]:
        return {
            "container": self.container,
            "codec": self.codec,
            "rate": self.rate,
            "channels": self.channels,
            "duration_seconds": None if self.duration is None else round(self.duration, 3),
        }


@dataclass(frozen=True)
class OpenedAudio:
    """An open container, its first audio stream and what its header says."""

    container: Any
    stream: Any
    info: AudioInfo


@contextmanager
def open_audio(path: Path, content_type: str | None = None) -> Iterator[OpenedAudio]:
    """Open ``path`` as audio under the rules in the module docstring.

    With ``content_type`` (a key of :data:`AUDIO_FORMATS`) that container's demuxer is
    forced; without it, any allowed demuxer may claim the file. The header is checked
    against the bounds before this returns, so nothing has been decoded when it raises
    ``audio_too_long``.
    """
    forced = None
    if content_type is not None:
        if content_type not in AUDIO_FORMATS:
            raise PermanentError(
                "unsupported_audio", f"{content_type} is not an accepted audio type"
            )
        forced = AUDIO_FORMATS[content_type].demuxer
    try:
        container = av.open(
            str(path),
            mode="r",
            format=forced,
            container_options={"protocol_whitelist": "file", "format_whitelist": FORMAT_WHITELIST},
            timeout=settings.MYSPINBOT_MEDIA_OPEN_SECONDS,
        )
    except av.ExitError:
        raise _timeout("opening the audio", settings.MYSPINBOT_MEDIA_OPEN_SECONDS) from None
    except (av.FFmpegError, UnicodeDecodeError, ValueError) as error:
        raise PermanentError("bad_audio", f"{path.name} is not readable audio: {error}") from None
    try:
        yield OpenedAudio(container, *_checked_stream(container, path, content_type))
    finally:
        container.close()


def _checked_stream(container: Any, path: Path, content_type: str | None) -> tuple[Any, AudioInfo]:
    demuxer = container.format.name
    allowed = [
        f
        for key, f in AUDIO_FORMATS.items()
        # (a demuxer is named by every name it answers to: "mov,mp4,m4a,3gp,3g2,mj2")
        if f.demuxer in demuxer.split(",") and (content_type is None or key == content_type)
    ]
    if not allowed:
        raise PermanentError("unsupported_audio", f"the {demuxer} container is not accepted")
    if not container.streams.audio:
        raise PermanentError("bad_audio", f"{path.name} has no audio stream")
    stream = container.streams.audio[0]
    codec = stream.codec_context.codec.canonical_name
    if not any(codec in f.codecs for f in allowed):
        raise PermanentError(
            "unsupported_audio", f"{codec} audio in a {demuxer} container is not accepted"
        )
    duration = None
    if stream.duration is not None and stream.time_base is not None:
        duration = float(stream.duration * stream.time_base)
    elif container.duration is not None:
        duration = float(container.duration) / av.time_base
    info = AudioInfo(
        demuxer, codec, int(stream.rate or 0), int(stream.codec_context.channels), duration
    )
    if info.rate <= 0 or info.channels <= 0:
        raise PermanentError("bad_audio", f"{path.name} declares no sample rate or channels")
    if duration is not None:
        check_bounds(duration, info.rate, info.channels)
    return stream, info


def check_bounds(seconds: float, rate: int, channels: int) -> None:
    """Raise ``audio_too_long`` when ``seconds`` of audio at ``rate`` × ``channels`` is
    more than the settings allow."""
    max_seconds = float(settings.MYSPINBOT_MAX_AUDIO_SECONDS)
    max_samples = int(settings.MYSPINBOT_MAX_AUDIO_SAMPLES)
    samples = seconds * rate * channels
    if seconds > max_seconds or samples > max_samples:
        raise PermanentError(
            "audio_too_long",
            f"the audio lasts {seconds:.1f} s at {rate} Hz x {channels} channels; at most "
            f"{max_seconds:g} s and {max_samples} samples are accepted",
            details={
                "duration_seconds": round(seconds, 3),
                "max_seconds": max_seconds,
                "max_samples": max_samples,
            },
        )


def decoded_frames(opened: OpenedAudio) -> Iterator[Any]:
    """The audio frames of ``opened``'s stream, stopping with ``audio_too_long`` as soon
    as more than the bounds have been decoded (whatever the header said) and with
    ``media_timeout`` once decoding has run past ``MYSPINBOT_MEDIA_DECODE_SECONDS``."""
    deadline = time.monotonic() + float(settings.MYSPINBOT_MEDIA_DECODE_SECONDS)
    samples = 0  # per channel
    rate = opened.info.rate
    try:
        for frame in opened.container.decode(opened.stream):
            samples += frame.samples
            # A frame may change rate or channels mid-stream; count at the larger.
            rate = max(rate, int(frame.rate or 0))
            channels = max(opened.info.channels, len(frame.layout.channels))
            check_bounds(samples / rate, rate, channels)
            if time.monotonic() > deadline:
                raise _timeout("decoding the audio", settings.MYSPINBOT_MEDIA_DECODE_SECONDS)
            yield frame
    except av.ExitError:
        raise _timeout("reading the audio", settings.MYSPINBOT_MEDIA_OPEN_SECONDS) from None


def probe_audio(path: Path, content_type: str | None = None) -> AudioInfo:
    """Check that ``path`` is allowed, bounded audio; what its header says.

    When the header declares no duration the stream is decoded (and thrown away) to
    count it, under the same bounds and deadline.
    """
    with open_audio(path, content_type) as opened:
        if opened.info.duration is not None:
            return opened.info
        try:
            for _ in decoded_frames(opened):
                pass
        except av.FFmpegError as error:
            raise PermanentError("bad_audio", f"cannot decode {path.name}: {error}") from None
        return opened.info


def _timeout(doing: str, limit: float) -> PermanentError:
    return PermanentError("media_timeout", f"{doing} took too long (limit {limit:g} s)")


def open_image(source: Path | IO[bytes]) -> Image.Image:
    """Open an image with Pillow, trying only the :data:`IMAGE_FORMATS` plug-ins.

    Raises Pillow's errors (``UnidentifiedImageError`` for any other format and
    ``DecompressionBombError`` past twice ``Image.MAX_IMAGE_PIXELS``).
    """
    return Image.open(source, formats=IMAGE_FORMATS)
