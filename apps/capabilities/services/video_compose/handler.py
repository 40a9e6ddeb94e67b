"""video.compose: images (stills, or an animated clip's frames) + narration → an H.264/AAC
MP4 with captions; stills get a pan/zoom, a clip plays at its own frame rate, looped."""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from apps.capabilities.context import NodeContext
from apps.capabilities.media import captions, speech_timing, video
from myspinbot.errors import PermanentError

# What this service takes from its predecessors, written once in its capability.json
# (``accepts``) and checked at submission by apps.graphs.contracts.
ACCEPTS_IMAGE: dict[str, dict[str, float]] = json.loads(
    Path(__file__).with_name("capability.json").read_text(encoding="utf-8")
)["accepts"]["image"]
MIN_IMAGE_SIDE = int(ACCEPTS_IMAGE["width"]["min"])
MAX_CLIP_FRAMES = int(ACCEPTS_IMAGE["frames"]["max"])
MAX_CLIP_FPS = float(ACCEPTS_IMAGE["fps"]["max"])

FORMATS = {"16:9": (1280, 720), "9:16": (1080, 1920), "1:1": (1080, 1080)}

DEFAULTS: dict[str, Any] = {
    "format": "custom",
    "width": 1280,
    "height": 720,
    "fps": 25,
    "captions": True,
    "zoom": 1.1,
    "crf": 23,
    "preset": "veryfast",
}


def run(ctx: NodeContext) -> dict[str, Any]:
    """Compose ``video.mp4`` and ``poster.jpg`` from the inputs; see ``capability.json``.

    Images come from a predecessor's ``keyframes``, else the static ``photos``, else
    ``portrait``; the narration (and its ``cues``) from a predecessor's ``audio``. Raises
    ``PermanentError`` ``missing_input``, ``bad_image``, ``image_too_small``,
    ``image_too_large``, ``bad_audio``, ``empty_audio`` or ``bad_cues`` for bad input.
    """
    params = {**DEFAULTS, **ctx.params}
    width, height = FORMATS.get(params["format"], (params["width"], params["height"]))
    settings = video.VideoSettings(
        width=width,
        height=height,
        fps=params["fps"],
        zoom=float(params["zoom"]),
        captions=params["captions"],
        crf=params["crf"],
        preset=params["preset"],
    )
    talking = find_talking(ctx.inputs)
    audio_ref, cues = find_narration(ctx.inputs)
    assert ctx.workdir is not None  # the worker always gives handlers a scratch folder
    workdir = ctx.workdir

    ctx.progress(0.0, "reading the narration")
    narration_path = ctx.artifacts.fetch(audio_ref, workdir, "narration")
    narration = video.read_audio(narration_path)
    ctx.progress(0.005, "levelling the narration for the AAC mix")
    narration, mix = video.master_audio(narration)
    levels = {
        "loudness_lufs": None if mix.lufs is None else round(mix.lufs, 2),
        "true_peak_dbtp": None if mix.true_peak_dbtp is None else round(mix.true_peak_dbtp, 2),
    }
    timing = "none"
    note = "captions are off"
    if settings.captions and cues:
        ctx.progress(0.01, "timing the captions by the speech")
        cues, timing, note = caption_cues(ctx.inputs, narration_path, cues)
    timed = {
        "caption_timing": timing,
        "caption_note": note,
        "cues": captions.as_json(cues),
        **levels,
    }
    output = workdir / "video.mp4"
    if talking is not None:
        clip = ctx.artifacts.fetch(talking["video"], workdir, "talking.mp4")
        ctx.progress(0.02, f"framing {math.ceil(narration.duration)} s of the talking head")
        result = video.compose_talking(
            clip,
            talking["face"],
            narration,
            cues,
            settings,
            output,
            lambda fraction, message: ctx.progress(0.02 + 0.93 * fraction, message),
        )
        return {**store(ctx, output, result, settings, clip_frames=0), **timed}
    image_refs = find_images(ctx.inputs)
    clip_fps = find_clip_fps(ctx.inputs)
    if clip_fps is not None and len(image_refs) > MAX_CLIP_FRAMES:
        raise PermanentError(
            "bad_input",
            f"the clip has {len(image_refs)} frames; at most {MAX_CLIP_FRAMES} are composed",
            details={"frames": len(image_refs), "max": MAX_CLIP_FRAMES},
        )
    if clip_fps is None:
        used = video.images_to_use(len(image_refs), narration.duration)
    else:
        used = len(image_refs)
    images: list[Path] = []
    for number, ref in enumerate(image_refs[:used]):
        path = ctx.artifacts.fetch(ref, workdir, f"image-{number}")
        video.check_image(path, min_side=MIN_IMAGE_SIDE)
        images.append(path)

    what = "video" if clip_fps is None else f"video from a {len(images)}-frame clip"
    ctx.progress(0.02, f"composing {math.ceil(narration.duration)} s of {what}")
    result = video.compose(
        images,
        narration,
        cues,
        settings,
        output,
        lambda fraction, message: ctx.progress(0.02 + 0.93 * fraction, message),
        clip_fps=clip_fps,
    )
    clip_frames = len(images) if clip_fps is not None else 0
    return {**store(ctx, output, result, settings, clip_frames), **timed}


def caption_cues(
    inputs: Mapping[str, Any], narration: Path, cues: list[video.Cue]
) -> tuple[list[video.Cue], str, str]:
    """Caption lines timed by the narration's words, the timing and a note saying where the
    times came from; the sentence ``cues`` unchanged when the words cannot be timed."""
    text = " ".join(cue.text for cue in cues)
    words = None
    source = ""
    for value in inputs.values():
        if not isinstance(value, dict):
            continue
        if words := captions.parse_words(value.get("word_times")):
            source = "the narration's alignment by tts.speak"
            break
        if words := captions.parse_words(value.get("words")):
            source = "a predecessor's alignment of the narration (lip-sync)"
            break
    if not words:
        try:
            words = list(speech_timing.align(narration, text).words)
        except speech_timing.AlignmentError as error:
            return cues, "sentences", f"the narration could not be aligned: {error}"[:300]
        source = "the narration force-aligned to its text"
    timed = captions.word_cues(text, words)
    if timed is None:
        return cues, "sentences", "the aligned words cover too little of the text"
    return timed, "words", f"word times from {source}"


def store(
    ctx: NodeContext,
    output: Path,
    result: video.Composition,
    settings: video.VideoSettings,
    clip_frames: int,
) -> dict[str, Any]:
    """Store the MP4 and its poster; the node's outputs."""
    ctx.progress(0.96, "storing the video")
    video_ref = ctx.artifacts.save("video.mp4", output, "video/mp4")
    poster_ref = ctx.artifacts.save("poster.jpg", result.poster_jpeg, "image/jpeg")
    ctx.progress(1.0, "video ready")
    return {
        "video": video_ref,
        "poster": poster_ref,
        "duration_seconds": round(result.duration_seconds, 3),
        "width": settings.width,
        "height": settings.height,
        "fps": settings.fps,
        "frames": result.frames,
        "captions": result.captions,
        "clip_frames": clip_frames,
    }


def find_talking(inputs: Mapping[str, Any]) -> dict[str, Any] | None:
    """A predecessor's talking-head clip: ``{"video": ref, "face": {box, mouth, chin_y}}``."""
    for value in inputs.values():
        if (
            isinstance(value, dict)
            and isinstance(value.get("video"), dict)
            and isinstance(value.get("face"), dict)
        ):
            face = value["face"]
            try:
                box = [float(v) for v in face["box"]]
                mouth = [float(v) for v in face["mouth"]]
                chin = float(face["chin_y"])
            except (KeyError, TypeError, ValueError):
                raise PermanentError("bad_input", "the talking clip's face is malformed") from None
            if (
                len(box) != 4
                or len(mouth) != 4
                or not all(map(math.isfinite, [*box, *mouth, chin]))
            ):
                raise PermanentError("bad_input", "the talking clip's face is malformed")
            return {"video": value["video"], "face": {"box": box, "mouth": mouth, "chin_y": chin}}
    return None


def find_images(inputs: Mapping[str, Any]) -> list[dict[str, Any]]:
    """The image references: a predecessor's keyframes, else photos, else the portrait."""
    for value in inputs.values():
        if (
            isinstance(value, dict)
            and isinstance(value.get("keyframes"), list)
            and value["keyframes"]
        ):
            return list(value["keyframes"])
    photos = inputs.get("photos")
    if isinstance(photos, list) and photos:
        return list(photos)
    portrait = inputs.get("portrait")
    if isinstance(portrait, dict) and "artifact" in portrait:
        return [portrait]
    raise PermanentError(
        "missing_input", "no image: give keyframes (from a predecessor), photos or a portrait"
    )


def find_clip_fps(inputs: Mapping[str, Any]) -> float | None:
    """The frame rate of an animated clip (a predecessor's ``keyframes`` of at least two
    frames with its ``fps``, as ``video.animate`` gives), or ``None`` for stills."""
    for value in inputs.values():
        if (
            isinstance(value, dict)
            and isinstance(value.get("keyframes"), list)
            and value["keyframes"]
        ):
            fps = value.get("fps")
            if len(value["keyframes"]) < 2 or fps is None:
                return None
            if (
                isinstance(fps, bool)
                or not isinstance(fps, int | float)
                or not 0 < fps <= MAX_CLIP_FPS
            ):
                raise PermanentError(
                    "bad_input", f"the clip's fps must be 0-{MAX_CLIP_FPS:g}, not {fps!r}"
                )
            return float(fps)
    return None


def find_narration(inputs: Mapping[str, Any]) -> tuple[dict[str, Any], list[video.Cue]]:
    """The narration's reference and its cues, from the predecessor that made it."""
    for value in inputs.values():
        if isinstance(value, dict) and isinstance(value.get("audio"), dict):
            return value["audio"], parse_cues(value.get("cues") or [])
    raise PermanentError(
        "bad_audio", "no narration: the node needs a predecessor whose output has 'audio'"
    )


def parse_cues(raw: object) -> list[video.Cue]:
    """Check and convert ``[{"start", "end", "text"}]``; ``bad_cues`` when malformed."""
    if not isinstance(raw, list):
        raise PermanentError("bad_cues", "cues must be a list")
    cues: list[video.Cue] = []
    for number, item in enumerate(raw):
        try:
            start, end, text = item["start"], item["end"], item["text"]
            cue = video.Cue(start=float(start), end=float(end), text=str(text))
        except (TypeError, KeyError, ValueError):
            raise PermanentError(
                "bad_cues", f"cue {number} is not {{start, end, text}}: {item!r}"[:200]
            ) from None
        if not (math.isfinite(cue.start) and math.isfinite(cue.end)):
            raise PermanentError("bad_cues", f"cue {number} has a non-finite time")
        cues.append(cue)
    return cues
