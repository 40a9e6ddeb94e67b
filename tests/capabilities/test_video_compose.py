"""video.compose with real images, real narration WAVs, the real x264/AAC encoders and the
session's S3 store; every check decodes the MP4 it produced with PyAV."""

from __future__ import annotations

import io
import itertools
import struct
import time
import wave
import zlib
from dataclasses import dataclass
from typing import Any

import av
import numpy as np
import pyloudnorm
import pytest
from django.test import override_settings
from PIL import Image, ImageDraw

from apps.capabilities.media import video
from apps.capabilities.services.video_compose import handler
from apps.jobs.models import Artifact
from myspinbot.errors import Cancelled, PermanentError
from testkit.contexts import ServiceRun, make_service_run
from tests.support.media import png_bytes

SERVICE = "video.compose"
SMALL = {"width": 320, "height": 240, "fps": 25}
# Luma above this is caption text (white, Y = 235); the test pictures stay well below it.
TEXT_LUMA = 200
CUES = [
    {"start": 0.2, "end": 0.9, "text": "Hello there"},
    {"start": 1.3, "end": 1.8, "text": "A second, much longer caption that has to be wrapped"},
]


def portrait_png(width: int = 800, height: int = 1000) -> bytes:
    """A portrait-like picture: a gradient with a face-like ellipse; luma stays under 180."""
    y, x = np.mgrid[0:height, 0:width]
    pixels = np.stack([40 + 100 * x / width, 60 + 80 * y / height, np.full(x.shape, 90.0)], axis=-1)
    image = Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8))
    draw = ImageDraw.Draw(image)
    draw.ellipse((width * 0.25, height * 0.15, width * 0.75, height * 0.65), fill=(170, 130, 110))
    draw.rectangle((width * 0.1, height * 0.75, width * 0.9, height * 0.95), fill=(30, 60, 120))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def flat_png(color: tuple[int, int, int], size: tuple[int, int] = (320, 240)) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, color).save(buffer, format="PNG")
    return buffer.getvalue()


def narration_wav(seconds: float, rate: int = 16000) -> bytes:
    """A tone with a little noise, as 16-bit mono PCM."""
    t = np.arange(round(seconds * rate)) / rate
    rng = np.random.default_rng(0)
    signal = 0.3 * np.sin(2 * np.pi * 220 * t) + 0.02 * rng.standard_normal(t.size)
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((signal * 32767).astype("<i2").tobytes())
    return buffer.getvalue()


def png_header_only(width: int, height: int) -> bytes:
    """A PNG signature and IHDR claiming ``width`` x ``height``, with no pixel data at all."""
    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    chunk = b"IHDR" + ihdr
    end = b"IEND"
    return (
        b"\x89PNG\r\n\x1a\n"
        + struct.pack(">I", len(ihdr))
        + chunk
        + struct.pack(">I", zlib.crc32(chunk))
        + struct.pack(">I", 0)
        + end
        + struct.pack(">I", zlib.crc32(end))
    )


def compose(
    params: dict[str, Any],
    images: dict[str, Any] | None = None,
    seconds: float = 2.0,
    cues: list[dict[str, Any]] | None = None,
) -> tuple[dict[str, Any], ServiceRun]:
    """Run the handler on a fresh context; ``images`` maps input names to image bytes."""
    run = make_service_run(SERVICE, params)
    inputs: dict[str, Any] = {
        "speak": {
            "audio": run.upload("narration.wav", narration_wav(seconds), "audio/wav"),
            "cues": CUES if cues is None else cues,
        }
    }
    for name, value in (images or {"portrait": portrait_png()}).items():
        if isinstance(value, list):
            inputs[name] = [
                run.upload(f"{name}-{n}.png", data, "image/png") for n, data in enumerate(value)
            ]
        else:
            inputs[name] = run.upload(f"{name}.png", value, "image/png")
    run.context.inputs = inputs
    return handler.run(run.context), run


@dataclass
class Decoded:
    codecs: list[tuple[str, str]]
    pix_fmt: str
    duration: float
    frames: list[np.ndarray]  # luma planes
    chroma: list[tuple[float, float]]  # mean U, mean V per frame
    times: list[float]


def decode(data: bytes) -> Decoded:
    with av.open(io.BytesIO(data)) as container:
        codecs = sorted((stream.type, stream.codec_context.name) for stream in container.streams)
        stream = container.streams.video[0]
        pix_fmt = stream.codec_context.pix_fmt
        duration = container.duration / 1_000_000
        lumas, chroma, times = [], [], []
        for frame in container.decode(stream):
            planes = frame.to_ndarray()
            height = frame.height
            lumas.append(planes[:height])
            rest = planes[height:].reshape(-1)
            half = rest.size // 2
            chroma.append((float(rest[:half].mean()), float(rest[half:].mean())))
            times.append(float(frame.time))
    return Decoded(codecs, pix_fmt, duration, lumas, chroma, times)


def top_level_atoms(data: bytes) -> list[str]:
    atoms, offset = [], 0
    while offset + 8 <= len(data):
        size, kind = struct.unpack(">I4s", data[offset : offset + 8])
        if size == 1:
            size = struct.unpack(">Q", data[offset + 8 : offset + 16])[0]
        elif size == 0:
            size = len(data) - offset
        atoms.append(kind.decode("latin-1"))
        offset += size
    return atoms


def caption_pixels(luma: np.ndarray) -> int:
    band = luma[int(luma.shape[0] * 0.7) :]
    return int((band > TEXT_LUMA).sum())


def error_of(**kwargs: Any) -> PermanentError:
    with pytest.raises(PermanentError) as raised:
        compose(SMALL, **kwargs)
    return raised.value


# --- The video ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_composes_h264_aac_mp4_as_long_as_the_narration() -> None:
    output, run = compose(SMALL, seconds=2.0)

    assert {key: output[key] for key in ("duration_seconds", "width", "height", "fps")} == {
        "duration_seconds": 2.0,
        "width": 320,
        "height": 240,
        "fps": 25,
    }
    assert output["frames"] == 50
    assert output["captions"] == 2
    assert output["video"]["content_type"] == "video/mp4"
    assert output["poster"]["content_type"] == "image/jpeg"
    data = run.read(output["video"])
    decoded = decode(data)
    assert decoded.codecs == [("audio", "aac"), ("video", "h264")]
    assert decoded.pix_fmt == "yuv420p"
    assert abs(decoded.duration - 2.0) <= 0.03 * 2.0
    assert len(decoded.frames) == 50
    assert decoded.times[0] == 0.0
    assert min(float(luma.mean()) for luma in decoded.frames) > 60
    atoms = top_level_atoms(data)
    assert atoms.index("moov") < atoms.index("mdat")
    poster = Image.open(io.BytesIO(run.read(output["poster"])))
    assert (poster.format, poster.size) == ("JPEG", (320, 240))
    assert float(np.asarray(poster.convert("L")).mean()) > 60
    fractions = [fraction for fraction, _ in run.progress.reports]
    assert fractions == sorted(fractions)
    assert fractions[-1] == 1.0


@pytest.mark.django_db
def test_frame_count_follows_fps_and_odd_durations() -> None:
    output, run = compose({"width": 256, "height": 144, "fps": 24}, seconds=1.37, cues=[])

    decoded = decode(run.read(output["video"]))
    assert output["frames"] == round(1.37 * 24) == 33
    assert len(decoded.frames) == 33
    assert abs(decoded.duration - 1.37) <= 0.03 * 1.37
    assert output["captions"] == 0


@pytest.mark.django_db
def test_pan_and_zoom_moves_the_picture() -> None:
    output, run = compose({**SMALL, "zoom": 1.3}, seconds=2.0, cues=[])

    frames = decode(run.read(output["video"])).frames
    first, last = frames[0].astype(np.float32), frames[-1].astype(np.float32)
    assert float(np.abs(first - last).mean()) > 3.0
    # Consecutive frames differ only a little: a slow, smooth motion.
    assert (
        max(float(np.abs(frames[i].astype(np.float32) - frames[i + 1]).mean()) for i in range(49))
        < 3.0
    )


@pytest.mark.django_db
def test_captions_appear_exactly_while_their_cue_runs() -> None:
    output, run = compose(SMALL, seconds=2.0)

    decoded = decode(run.read(output["video"]))
    with_text = [caption_pixels(luma) > 20 for luma in decoded.frames]
    expected = [any(cue["start"] <= index / 25 < cue["end"] for cue in CUES) for index in range(50)]
    assert with_text == expected
    assert (
        sum(
            caption_pixels(luma)
            for luma, shown in zip(decoded.frames, expected, strict=True)
            if not shown
        )
        == 0
    )
    # The long caption wraps onto more lines than the short one: a taller block of text.
    rows_short = (decoded.frames[10][168:] > TEXT_LUMA).any(axis=1).sum()
    rows_long = (decoded.frames[40][100:] > TEXT_LUMA).any(axis=1).sum()
    assert rows_long > rows_short


@pytest.mark.django_db
def test_captions_can_be_turned_off() -> None:
    output, run = compose({**SMALL, "captions": False}, seconds=2.0)

    decoded = decode(run.read(output["video"]))
    assert output["captions"] == 0
    assert [caption_pixels(luma) for luma in decoded.frames] == [0] * 50


def test_caption_frames_are_the_frames_inside_each_cue() -> None:
    cues = [video.Cue(0.2, 0.9, "a"), video.Cue(1.0, 1.04, "b"), video.Cue(1.2, 1.5, "  ")]

    shown = video.caption_frames(cues, frames=50, fps=25)

    assert list(np.flatnonzero(shown == 0)) == list(range(5, 23))
    assert list(np.flatnonzero(shown == 1)) == [25]
    assert int((shown >= 0).sum()) == 19


def test_wrap_text_keeps_lines_within_the_width() -> None:
    font = video._font(20)
    text = "A caption long enough to need several lines, with an extraordinarilylongword"

    lines = video.wrap_text(text, font, 150)

    assert len(lines) >= 3
    assert all(font.getlength(line) <= 150 for line in lines)
    assert "".join(lines).replace(" ", "") == text.replace(" ", "")


@pytest.mark.django_db
def test_several_photos_cross_fade_in_order() -> None:
    red, blue = flat_png((200, 40, 40)), flat_png((40, 40, 200))

    output, run = compose(SMALL, images={"photos": [red, blue]}, seconds=4.4, cues=[])

    decoded = decode(run.read(output["video"]))
    first_u, first_v = decoded.chroma[0]
    last_u, last_v = decoded.chroma[-1]
    assert first_v > 170 > first_u  # red
    assert last_u > 170 > last_v  # blue
    middle_u, middle_v = decoded.chroma[55]  # 2.2 s: half-way through the cross-fade
    assert 120 < middle_u < 170
    assert 120 < middle_v < 170


@pytest.mark.django_db
def test_keyframes_from_a_predecessor_come_before_photos() -> None:
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(1.0), "audio/wav"), "cues": []},
        "draw": {"keyframes": [run.upload("k.png", flat_png((40, 40, 200)), "image/png")]},
        "photos": [run.upload("p.png", flat_png((200, 40, 40)), "image/png")],
    }

    output = handler.run(run.context)

    red, _, blue = (
        Image.open(io.BytesIO(run.read(output["poster"]))).convert("RGB").getpixel((160, 120))
    )
    assert blue > 150 > red


@pytest.mark.django_db
def test_cancel_stops_the_encoding() -> None:
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(3.0), "audio/wav"), "cues": []},
        "portrait": run.upload("p.png", portrait_png(), "image/png"),
    }
    run.context.cancelled_callback = lambda: len(run.progress.reports) >= 3

    with pytest.raises(Cancelled):
        handler.run(run.context)

    assert len(run.progress.reports) == 3
    assert not Artifact.objects.filter(job=run.job, name="video.mp4").exists()


# --- Bad input ------------------------------------------------------------------------------


@pytest.mark.django_db
def test_no_image_is_missing_input() -> None:
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(1.0), "audio/wav"), "cues": []},
        "photos": [],
    }

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == "missing_input"


@pytest.mark.django_db
@pytest.mark.parametrize(
    "data",
    [b"definitely not an image", png_bytes(200, 200)[:120]],
    ids=["garbage", "truncated"],
)
def test_undecodable_image_is_bad_image(data: bytes) -> None:
    assert error_of(images={"portrait": data}).code == "bad_image"


@pytest.mark.django_db
@pytest.mark.parametrize("size", [(1, 1), (63, 400)])
def test_tiny_image_is_image_too_small(size: tuple[int, int]) -> None:
    error = error_of(images={"portrait": png_bytes(*size)})

    assert error.code == "image_too_small"
    assert error.details == {"width": size[0], "height": size[1]}


@pytest.mark.django_db
def test_huge_image_is_refused_from_its_header_alone() -> None:
    # The file has no pixel data: decoding it would fail as bad_image, so
    # image_too_large proves the size came from the header.
    started = time.monotonic()

    error = error_of(images={"portrait": png_header_only(20000, 20000)})

    assert error.code == "image_too_large"
    assert time.monotonic() - started < 5


@pytest.mark.django_db
@pytest.mark.parametrize(
    "limits",
    [{"MYSPINBOT_MAX_IMAGE_SIDE": 500}, {"MYSPINBOT_MAX_IMAGE_PIXELS": 200_000}],
    ids=["side", "pixels"],
)
def test_image_over_the_limits_is_image_too_large(limits: dict[str, int]) -> None:
    with override_settings(**limits):
        error = error_of(images={"portrait": png_header_only(600, 400)})

    assert error.code == "image_too_large"
    assert error.details == {"width": 600, "height": 400}


@pytest.mark.django_db
def test_no_narration_is_bad_audio() -> None:
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {"portrait": run.upload("p.png", portrait_png(), "image/png")}

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == "bad_audio"


@pytest.mark.django_db
@pytest.mark.parametrize(
    ("audio", "code"),
    [
        (b"RIFF....WAVEjunkjunkjunk" * 4, "bad_audio"),
        (png_bytes(64, 64), "bad_audio"),  # decodable, but no audio stream
        (narration_wav(0.0), "empty_audio"),
    ],
    ids=["garbage", "an-image", "zero-length"],
)
def test_bad_narration(audio: bytes, code: str) -> None:
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", audio, "audio/wav"), "cues": []},
        "portrait": run.upload("p.png", portrait_png(), "image/png"),
    }

    with pytest.raises(PermanentError) as raised:
        handler.run(run.context)

    assert raised.value.code == code


@pytest.mark.django_db
@pytest.mark.parametrize(
    "cues", [[{"start": 0.1, "text": "no end"}], [{"start": "soon", "end": 1, "text": "x"}]]
)
def test_malformed_cues_are_bad_cues(cues: list[dict[str, Any]]) -> None:
    assert error_of(cues=cues).code == "bad_cues"


# --- Speed (reported, not asserted) ---------------------------------------------------------


@pytest.mark.slow
@pytest.mark.django_db
@pytest.mark.parametrize("fps", [25, 24])
def test_speed_30_seconds_at_720p(fps: int, capsys: pytest.CaptureFixture[str]) -> None:
    run = make_service_run(SERVICE, {"fps": fps})
    cues = [
        {"start": 2.0 * n, "end": 2.0 * n + 1.6, "text": f"Sentence {n} of the narration here."}
        for n in range(15)
    ]
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(30.0), "audio/wav"), "cues": cues},
        "portrait": run.upload("p.png", portrait_png(), "image/png"),
    }

    started = time.perf_counter()
    output = handler.run(run.context)
    elapsed = time.perf_counter() - started

    assert output["frames"] == 30 * fps
    with capsys.disabled():
        print(
            f"\nvideo.compose 30 s 1280x720 @{fps} fps: {elapsed:.2f} s, "
            f"{30 / elapsed:.2f}x real time"
        )


# --- An animated clip ------------------------------------------------------------------


def clip_frame_png(number: int) -> bytes:
    """Clip frame ``number``: a bright square whose left edge moves 40 px a frame, on a dark
    ground, so each frame's picture is told apart by where the square is."""
    image = Image.new("RGB", (256, 192), (20, 30, 40))
    ImageDraw.Draw(image).rectangle((number * 40, 60, number * 40 + 39, 131), fill=(170, 170, 170))
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def square_column(luma: np.ndarray) -> int:
    """Which 40-px column (of the 256-px clip frame, scaled to the output) is bright."""
    columns = luma[luma.shape[0] // 2].astype(np.float32)
    centre = float(np.flatnonzero(columns > 100).mean())
    return int(centre * 256 / luma.shape[1] // 40)


@pytest.mark.django_db
def test_an_animated_clip_plays_as_motion_at_its_frame_rate_and_loops() -> None:
    run = make_service_run(SERVICE, {"width": 256, "height": 192, "fps": 24, "captions": False})
    clip = [run.upload(f"frame-{n}.png", clip_frame_png(n), "image/png") for n in range(4)]
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(2.0), "audio/wav"), "cues": []},
        "animate": {"keyframes": clip, "frames": clip, "fps": 8},
    }

    output = handler.run(run.context)

    decoded = decode(run.read(output["video"]))
    assert (output["frames"], output["clip_frames"], len(decoded.frames)) == (48, 4, 48)
    # At 8 clip frames a second in a 24 fps video, each clip frame lasts 3 video frames,
    # and the 4-frame clip starts again every 0.5 s.
    shown = [square_column(luma) for luma in decoded.frames]
    assert shown == [(index // 3) % 4 for index in range(48)]
    # The picture really moves over the clip's span: each clip frame differs from the last.
    starts = [decoded.frames[3 * n].astype(np.float32) for n in range(4)]
    assert min(float(np.abs(a - b).mean()) for a, b in itertools.pairwise(starts)) > 5.0


@pytest.mark.django_db
def test_keyframes_without_a_frame_rate_stay_stills() -> None:
    run = make_service_run(SERVICE, {"width": 256, "height": 192, "fps": 24, "captions": False})
    frames = [run.upload(f"k-{n}.png", clip_frame_png(n), "image/png") for n in range(2)]
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", narration_wav(1.0), "audio/wav"), "cues": []},
        "draw": {"keyframes": frames},
    }

    output = handler.run(run.context)

    # One second of narration holds one still (at least 2 s each): frame 0 throughout.
    shown = {square_column(luma) for luma in decode(run.read(output["video"])).frames}
    assert (output["clip_frames"], shown) == (0, {0})


def test_clip_frames_follow_the_clip_rate() -> None:
    # 25 fps video, a 16-frame clip at 8 fps: frame i shows floor(i * 8 / 25) mod 16.
    shown = [video.clip_frame(i, 25, 16, 8) for i in (0, 3, 4, 10, 49, 50, 54, 90)]

    assert shown == [0, 0, 1, 3, 15, 0, 1, 12]


# --- Captions timed by the speech -----------------------------------------------------------

SPOKEN = [
    "Otters hold hands while they sleep, so that they never drift apart.",
    "Then, at dawn, they wake and dive for breakfast.",
]


@pytest.mark.django_db
def test_captions_follow_the_spoken_words_within_100_ms(tmp_path: Any) -> None:
    """Real speech (Piper) with sentence cues as tts.speak gives them: the burned-in lines
    appear when their first word is spoken, by an alignment the test makes itself, and
    change in the MP4 at those times."""
    from apps.capabilities.media import speech_timing
    from apps.capabilities.media.tts_engines import PiperEngine, Voice, write_wav

    engine, voice = PiperEngine(), Voice()
    pieces, cues, cursor = [], [], 0.3
    rate = 22050
    for sentence in SPOKEN:
        samples, rate = engine.synthesize(sentence, voice)
        cues.append({"start": cursor, "end": cursor + len(samples) / rate, "text": sentence})
        pieces += [np.zeros(round(0.3 * rate), np.float32), np.asarray(samples, np.float32)]
        cursor += len(samples) / rate + 0.3
    pieces.append(np.zeros(round(0.5 * rate), np.float32))
    wav = tmp_path / "narration.wav"
    write_wav(wav, np.concatenate(pieces), rate)
    run = make_service_run(SERVICE, SMALL)
    run.context.inputs = {
        "speak": {
            "audio": run.upload("narration.wav", wav.read_bytes(), "audio/wav"),
            "cues": cues,
        },
        "portrait": run.upload("portrait.png", portrait_png(), "image/png"),
    }

    output = handler.run(run.context)

    assert output["caption_timing"] == "words"
    assert output["caption_note"] == "word times from the narration force-aligned to its text"
    lines = output["cues"]
    assert len(lines) >= 4  # two long sentences, in lines of at most 42 characters
    assert all(len(line["text"]) <= 42 for line in lines)
    assert " ".join(line["text"] for line in lines) == " ".join(SPOKEN)
    # The reference: the test's own alignment of the narration.
    words = speech_timing.align(wav, " ".join(SPOKEN)).words
    spoken = iter(words)
    for line in lines:
        first = speech_timing.normalise_words(line["text"])[0]
        word = next(w for w in spoken if w.text == first)
        assert abs(line["start"] - word.start) <= 0.1, (line, word)
    # ... and in the MP4: each line's text shows from the frame of its start (±100 ms).
    decoded = decode(run.read(output["video"]))
    signature = [
        (luma[int(luma.shape[0] * 0.7) :] > TEXT_LUMA).astype(np.int8) for luma in decoded.frames
    ]
    changes = [0.0] + [
        index / 25
        for index in range(1, len(signature))
        if np.abs(signature[index] - signature[index - 1]).sum() > 20
        and signature[index].sum() > 20
    ]
    for line in lines:
        assert min(abs(line["start"] - t) for t in changes) <= 0.1, (line, changes)
    # Nothing is shown in the pause before the first word.
    assert signature[0].sum() == 0


def test_caption_lines_break_at_sentences_pauses_and_42_characters() -> None:
    from apps.capabilities.media import captions
    from apps.capabilities.media.speech_timing import Word

    text = "Hi there. A zorblaxian word, unknown to the dictionary, sits here quite happily today"
    spoken = [
        w for w in text.lower().replace(".", "").replace(",", "").split() if w != "zorblaxian"
    ]
    words = [Word(w, 0.5 + 0.3 * i, 0.5 + 0.3 * i + 0.25) for i, w in enumerate(spoken)]

    cues = captions.word_cues(text, words)

    assert cues is not None
    assert [cue.text for cue in cues] == [
        "Hi there.",
        "A zorblaxian word, unknown to the",
        "dictionary, sits here quite happily today",
    ]
    assert cues[0].start == 0.5
    # "there" ends at 1.05; the hold would keep the line to 1.25, but the next starts at 1.1.
    assert cues[0].end == pytest.approx(1.1)
    assert cues[1].start == pytest.approx(1.1)
    # The last line holds 0.2 s after its last word.
    assert cues[2].end == pytest.approx(0.5 + 0.3 * (len(spoken) - 1) + 0.25 + 0.2)
    assert all(a.end <= b.start for a, b in itertools.pairwise(cues))
    assert captions.word_cues(text, words[:3]) is None  # too little of the text is timed
    assert captions.parse_words([{"text": "a", "start": 1, "end": 0.5}]) is None
    assert captions.parse_words([{"text": "a", "start": True, "end": 2}]) is None
    assert captions.parse_words("words") is None


# --- The final mix ----------------------------------------------------------------------------


def mp4_audio(data: bytes) -> tuple[np.ndarray, int]:
    """The MP4's audio as decoded (PyAV), mono float64."""
    with av.open(io.BytesIO(data)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray() for frame in container.decode(stream)]
        rate = stream.codec_context.sample_rate
    return np.concatenate(chunks, axis=1).mean(axis=0).astype(np.float64), rate


def dbtp(samples: np.ndarray) -> float:
    from scipy.signal import resample_poly

    return float(20 * np.log10(np.max(np.abs(resample_poly(samples, 4, 1)))))


@pytest.mark.django_db
def test_the_delivered_audio_is_minus_16_lufs_with_its_decoded_true_peak_under_minus_1_dbtp(
    tmp_path: Any,
) -> None:
    """A peaky narration (real speech with short noise bursts peaking at 0 dBFS, under
    -18 LUFS: reaching -16 needs a gain its peaks cannot take): limited to -1 dBTP and
    encoded once, its AAC overshoots the ceiling; the video's audio, measured on the
    output MP4, meets it at about -16 LUFS."""
    from apps.capabilities.media import audio
    from apps.capabilities.media.tts_engines import PiperEngine, Voice, write_wav

    speech, rate = PiperEngine().synthesize(" ".join(SPOKEN), Voice())
    peaky = np.asarray(speech, np.float64)
    noise = np.random.default_rng(1).standard_normal(200)
    for burst in range(1, 8):
        at = burst * peaky.size // 8
        peaky[at : at + 200] += noise * 0.4
    peaky *= 0.99 / np.abs(peaky).max()
    assert pyloudnorm.Meter(rate).integrated_loudness(peaky) < -18.0
    # (why a measured ceiling: the same audio limited to -1 dBTP decodes over it)
    limited, _ = audio.normalize_loudness(peaky.astype(np.float32), rate, -16.0, -1.0)
    once = video.decode_aac(video.encode_aac(video.Audio(limited[None, :], rate)))
    assert dbtp(once.samples[0].astype(np.float64)) > -0.8
    wav = tmp_path / "narration.wav"
    write_wav(wav, peaky.astype(np.float32), rate)
    run = make_service_run(SERVICE, {**SMALL, "captions": False})
    run.context.inputs = {
        "speak": {"audio": run.upload("n.wav", wav.read_bytes(), "audio/wav"), "cues": []},
        "portrait": run.upload("portrait.png", portrait_png(), "image/png"),
    }

    output = handler.run(run.context)

    delivered, delivered_rate = mp4_audio(run.read(output["video"]))
    assert delivered_rate == rate
    lufs = pyloudnorm.Meter(delivered_rate).integrated_loudness(delivered)
    peak = dbtp(delivered)
    assert lufs == pytest.approx(-16.0, abs=0.5)
    assert peak <= -1.0
    assert peak > -2.0  # (the limiter's ceiling moved by the overshoot, not by a guess)
    assert output["loudness_lufs"] == pytest.approx(lufs, abs=0.05)
    assert output["true_peak_dbtp"] == pytest.approx(peak, abs=0.05)


@pytest.mark.django_db
def test_a_tone_narration_is_levelled_too() -> None:
    # (the tone of narration_wav: 0.3 full scale, about -13 LUFS)
    output, run = compose({**SMALL, "captions": False}, seconds=2.0)

    delivered, rate = mp4_audio(run.read(output["video"]))
    assert pyloudnorm.Meter(rate).integrated_loudness(delivered) == pytest.approx(-16.0, abs=0.5)
    assert dbtp(delivered) <= -1.0
