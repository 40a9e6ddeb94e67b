"""Lip-sync quality and speed of the CPU talking head, measured on the OUTPUT video.

    .venv/bin/python bench/lipsync.py [--seconds 20] [--keep DIR] [--strict]

Inputs it makes itself: the portrait is scikit-image's ``astronaut()`` (512×512, scaled to
720×720 with cv2 INTER_CUBIC) centred on a 1280×720 neutral grey canvas; the narration is
Piper speech of fixed English sentences (bilabials, open vowels; 0.45 s pause between
sentences, 0.5 s silence at both ends), about ``--seconds`` long (sentences repeat).

What it measures:

1. ``talking_head.render`` at 25 fps, wall clock, as × real time (goal ≥ 2×).
2. Every frame of the rendered MP4, decoded with PyAV, is meshed again (``face.find_face``
   on frame 0, then ``face.track(frame, previous)``). Mouth opening = mean vertical gap
   of the inner lips (13↔14, 82↔87, 312↔317, along the face's own vertical) / mouth width
   (61↔291), per frame. Loudness = ``speech_timing.loudness_envelope`` of the narration
   WAV at 25 fps.
   (a) Pearson r of opening vs loudness at the best lag within ±200 ms (whole frames;
       positive lag = the mouth moves after the sound). Goals r ≥ 0.6, |lag| ≤ 60 ms.
   (b) Silent stretches: runs of ≥ 5 frames (200 ms) with loudness < 0.15 (0.15 of the
       way from −60 dBFS to the clip's peak frame). A stretch counts as closed when the
       opening is < 0.05 mouth widths on ≥ 80 % of its frames. Goal ≥ 90 % closed.
   (c) Identity: each output frame is aligned to the portrait by a similarity transform
       (cv2.estimateAffinePartial2D) from stable landmarks (eye corners, nose bridge,
       forehead); SSIM (grayscale, skimage) over the face oval minus a dilated hull
       around lips + jaw + chin (below the nose). Mean and min over frames (goal ≥ 0.90).
3. The whole quick job's video part: render + ``video.compose_talking`` (1280×720, 25 fps,
   no cues) as × real time (goal ≥ 1×); Piper synthesis is timed too and the total
   speech + lip-sync + compose is reported (the script step, an LLM call, is not here).

Prints a table with PASS/MISS per goal and the command to rerun. Exit status 0, or with
``--strict`` 1 when any goal is missed. Needs no database, Redis or S3.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import shlex
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # run as a script: make the project importable
    sys.path.insert(0, str(REPO))

FPS = 25
PAD_SECONDS = 0.5
PAUSE_SECONDS = 0.45
MAX_LAG_MS = 200
SILENT_LOUDNESS = 0.15
SILENT_MIN_FRAMES = 5  # 200 ms at 25 fps
CLOSED_OPENING = 0.05  # mouth widths
CLOSED_SHARE = 0.80
# The landmark model reads a few hundredths of a mouth width on lips that are shut (about
# 0.06 on the astronaut's closed smile, checked by eye), so "closed" is also anything
# under this share of the median opening while speaking loudly, whichever is larger.
CLOSED_RELATIVE = 0.5
# A frame is in a blink when its eyes are under this share of their median openness...
BLINK_SHARE = 0.6
# ... or when the SSIM of its eyes against the portrait is this far under its median.
BLINK_SSIM_DROP = 0.15

GOALS = {
    "render_x": 2.0,
    "r": 0.6,
    "lag_ms": 60.0,
    "closed_share": 0.90,
    "ssim": 0.90,
    "video_x": 1.0,
}

SENTENCES = [
    "My father bought a big blue balloon for the parade.",
    "Bob and Pam paddled the boat past the bay.",
    "Far across the calm water, a large ship was sailing home.",
    "Mom put the warm bread and the apples in a paper bag.",
    "Oh, what a wonderful, bright morning it was!",
    "Maybe we should all stop by the harbour on Monday.",
    "Open the barn, and watch the ponies run about the farm.",
    "The man from Boston paid for a cup of hot cocoa.",
]

# Inner-lip pairs (upper, lower) and the landmarks a frame is aligned to the portrait by.
STABLE = (
    33, 133, 362, 263, 130, 359,  # eye corners (not the lids: they blink)
    168, 6, 197, 195, 5, 4, 1,  # nose bridge and tip
    10, 151, 9, 8, 109, 338, 67, 297,  # forehead
)  # fmt: skip


def setup_django() -> None:
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "myspinbot.settings.test")
    import django

    django.setup()


# --- inputs -------------------------------------------------------------------------------


def make_portrait(path: Path) -> None:
    import cv2
    from skimage import data

    photo = cv2.resize(data.astronaut(), (720, 720), interpolation=cv2.INTER_CUBIC)
    canvas = np.full((720, 1280, 3), 128, np.uint8)
    canvas[:, 280:1000] = photo
    cv2.imwrite(str(path), cv2.cvtColor(canvas, cv2.COLOR_RGB2BGR))


def make_narration(path: Path, seconds: float) -> tuple[str, float, float, float]:
    """Write the WAV; return its text, its duration, synthesis seconds (the voice loaded
    already) and the voice's load seconds."""
    from apps.capabilities.media.audio import write_wav
    from apps.capabilities.media.tts_engines import PiperEngine, Voice

    engine, voice = PiperEngine(), Voice()
    started = time.perf_counter()
    engine.synthesize("Hello.", voice)  # loads the model (once per worker process)
    load = time.perf_counter() - started
    pieces: list[np.ndarray] = []
    spoken: list[str] = []
    rate = 22050
    total = 0.0
    synth = 0.0
    target = max(1.0, seconds - 2 * PAD_SECONDS)
    index = 0
    while total < target:
        sentence = SENTENCES[index % len(SENTENCES)]
        started = time.perf_counter()
        samples, rate = engine.synthesize(sentence, voice)
        synth += time.perf_counter() - started
        if pieces:
            pieces.append(np.zeros(int(PAUSE_SECONDS * rate), np.float32))
        pieces.append(np.asarray(samples, np.float32))
        spoken.append(sentence)
        total = sum(len(p) for p in pieces) / rate
        index += 1
    pad = np.zeros(int(PAD_SECONDS * rate), np.float32)
    mono = np.concatenate([pad, *pieces, pad])
    write_wav(path, mono, rate)
    return " ".join(spoken), len(mono) / rate, synth, load


# --- measuring the output -----------------------------------------------------------------


def decode_frames(path: Path):
    import av

    with av.open(str(path)) as container:
        for frame in container.decode(video=0):
            yield frame.to_ndarray(format="rgb24")


def stream_starts(path: Path) -> tuple[float, float]:
    """Start time (s) of the first decoded video frame and audio frame."""
    import av

    starts = {}
    with av.open(str(path)) as container:
        for kind in ("video", "audio"):
            container.seek(0)
            stream = getattr(container.streams, kind)[0]
            for frame in container.decode(stream):
                starts[kind] = float(frame.pts * frame.time_base) if frame.pts is not None else 0.0
                break
    return starts.get("video", 0.0), starts.get("audio", 0.0)


def eye_openness(points: np.ndarray) -> float:
    """Mean lid gap over eye width, both eyes."""
    gaps = []
    for up, low, a, b in ((159, 145, 33, 133), (386, 374, 362, 263)):
        width = float(np.linalg.norm(points[b] - points[a]))
        gaps.append(float(np.linalg.norm(points[low] - points[up])) / max(width, 1e-6))
    return float(np.mean(gaps))


def identity_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Face oval minus a dilated hull of lips + jaw + chin (the part below the nose)."""
    import cv2

    from apps.capabilities.media import face as facemesh

    mask = np.zeros(shape, np.uint8)
    cv2.fillPoly(mask, [np.round(points[list(facemesh.FACE_OVAL)]).astype(np.int32)], 255)
    lower = list(facemesh.LIPS_OUTER) + list(facemesh.JAW) + [facemesh.CHIN]
    hull = cv2.convexHull(np.round(points[lower]).astype(np.int32))
    moving = np.zeros(shape, np.uint8)
    cv2.fillPoly(moving, [hull], 255)
    face_w = float(np.linalg.norm(points[454] - points[234]))
    radius = max(1, round(0.06 * face_w))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    moving = cv2.dilate(moving, kernel)
    # Only below the nose tip: the dilation must not eat the nose or the cheeks above it.
    moving[: int(points[facemesh.NOSE_TIP, 1]), :] = 0
    mask[moving > 0] = 0
    return mask > 0


def eyes_mask(points: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """Both eyes, lids and a margin: where a blink changes the picture."""
    import cv2

    from apps.capabilities.media import face as facemesh

    mask = np.zeros(shape, np.uint8)
    for lids in (
        facemesh.RIGHT_EYE_UPPER + facemesh.RIGHT_EYE_LOWER,
        facemesh.LEFT_EYE_UPPER + facemesh.LEFT_EYE_LOWER,
    ):
        cv2.fillPoly(mask, [cv2.convexHull(np.round(points[list(lids)]).astype(np.int32))], 255)
    face_w = float(np.linalg.norm(points[454] - points[234]))
    radius = max(1, round(0.05 * face_w))
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * radius + 1, 2 * radius + 1))
    return cv2.dilate(mask, kernel) > 0


def measure(clip_path: Path, portrait: np.ndarray) -> dict[str, object]:
    import cv2
    from skimage.metrics import structural_similarity

    from apps.capabilities.media import face as facemesh
    from testkit.mouth import mouth_opening

    source_face = facemesh.find_face(portrait)
    src_pts = source_face.landmarks.astype(np.float64)
    height, width = portrait.shape[:2]
    mask = identity_mask(src_pts, (height, width))
    ys, xs = np.nonzero(mask)
    y0, y1 = max(0, ys.min() - 8), min(height, ys.max() + 9)
    x0, x1 = max(0, xs.min() - 8), min(width, xs.max() + 9)
    crop_mask = mask[y0:y1, x0:x1]
    crop_eyes = eyes_mask(src_pts, (height, width))[y0:y1, x0:x1] & crop_mask
    crop_rest = crop_mask & ~crop_eyes
    src_full_gray = cv2.cvtColor(portrait, cv2.COLOR_RGB2GRAY)
    src_gray = src_full_gray[y0:y1, x0:x1]
    ecc_mask = mask.astype(np.uint8) * 255

    openings: list[float] = []
    eyes: list[float] = []
    ssims: list[float] = []
    eye_ssims: list[float] = []
    rest_ssims: list[float] = []
    lost = 0
    previous: np.ndarray | None = None
    for rgb in decode_frames(clip_path):
        if previous is None:
            points = facemesh.find_face(rgb).landmarks.astype(np.float64)
        else:
            points, presence = facemesh.track(rgb, previous)
            points = points.astype(np.float64)
            if presence < facemesh.MESH_PRESENCE:
                lost += 1
                try:
                    points = facemesh.find_face(rgb).landmarks.astype(np.float64)
                except Exception:
                    points = previous
        previous = points
        openings.append(mouth_opening(points))
        eyes.append(eye_openness(points))
        matrix, _ = cv2.estimateAffinePartial2D(
            points[list(STABLE)].astype(np.float32), src_pts[list(STABLE)].astype(np.float32)
        )
        if matrix is None:
            ssims.append(float("nan"))
            eye_ssims.append(float("nan"))
            rest_ssims.append(float("nan"))
            continue
        # Refine the landmark estimate by image registration (ECC, rotation + shift) on
        # the measured region itself: landmarks jitter by a pixel or so between frames.
        frame_gray = cv2.cvtColor(rgb, cv2.COLOR_RGB2GRAY)
        warp = cv2.invertAffineTransform(matrix).astype(np.float32)
        with contextlib.suppress(cv2.error):  # it did not converge: the landmark estimate
            _, warp = cv2.findTransformECC(
                src_full_gray.astype(np.float32),
                frame_gray.astype(np.float32),
                warp,
                cv2.MOTION_EUCLIDEAN,
                (cv2.TERM_CRITERIA_EPS | cv2.TERM_CRITERIA_COUNT, 50, 1e-5),
                ecc_mask,
                5,
            )
        aligned = cv2.warpAffine(
            frame_gray,
            warp,
            (width, height),
            flags=cv2.INTER_CUBIC | cv2.WARP_INVERSE_MAP,
            borderMode=cv2.BORDER_REFLECT101,
        )
        gray = aligned[y0:y1, x0:x1]
        _, ssim_map = structural_similarity(gray, src_gray, full=True, data_range=255)
        ssims.append(float(ssim_map[crop_mask].mean()))
        eye_ssims.append(float(ssim_map[crop_eyes].mean()))
        rest_ssims.append(float(ssim_map[crop_rest].mean()))
    return {
        "eye_ssim": np.array(eye_ssims),
        "rest_ssim": np.array(rest_ssims),
        "opening": np.array(openings),
        "eyes": np.array(eyes),
        "ssim": np.array(ssims),
        "lost": lost,
        "rest_opening": mouth_opening(src_pts),
    }


def best_lag(opening: np.ndarray, loudness: np.ndarray) -> tuple[float, int, dict[int, float]]:
    """Pearson r of opening[k + lag] vs loudness[k] for |lag| ≤ MAX_LAG_MS; the best."""
    n = min(len(opening), len(loudness))
    opening, loudness = opening[:n], loudness[:n]
    limit = int(MAX_LAG_MS / 1000 * FPS)
    results: dict[int, float] = {}
    for lag in range(-limit, limit + 1):
        if lag >= 0:
            a, b = opening[lag:], loudness[: n - lag]
        else:
            a, b = opening[: n + lag], loudness[-lag:]
        if len(a) > 2 and a.std() > 0 and b.std() > 0:
            results[lag] = float(np.corrcoef(a, b)[0, 1])
    lag = max(results, key=lambda k: results[k])
    return results[lag], lag, results


def silent_stretches(loudness: np.ndarray) -> list[tuple[int, int]]:
    quiet = loudness < SILENT_LOUDNESS
    stretches, start = [], None
    for index, value in enumerate([*quiet, False]):
        if value and start is None:
            start = index
        elif not value and start is not None:
            if index - start >= SILENT_MIN_FRAMES:
                stretches.append((start, index))
            start = None
    return stretches


# --- main ---------------------------------------------------------------------------------


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0, help="narration length, about")
    parser.add_argument("--keep", type=Path, help="write the inputs and videos here (kept)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a goal is missed")
    args = parser.parse_args(argv)
    command = shlex.join([".venv/bin/python", "bench/lipsync.py", *(argv or sys.argv[1:])])
    setup_django()
    from apps.capabilities.media import speech_timing, talking_head, video

    work = args.keep or Path(tempfile.mkdtemp(prefix="myspinbot-lipsync-"))
    work.mkdir(parents=True, exist_ok=True)
    portrait_path, wav_path = work / "portrait.png", work / "narration.wav"
    clip_path, final_path = work / "clip.mp4", work / "final.mp4"
    make_portrait(portrait_path)
    text, duration, synth_s, load_s = make_narration(wav_path, args.seconds)
    print(f"narration: {duration:.2f} s, {len(text.split())} words; work folder {work}")

    def quiet(_fraction: float, _message: str) -> None:
        pass

    started = time.perf_counter()
    clip = talking_head.render(portrait_path, wav_path, text, clip_path, quiet, fps=FPS)
    render_s = time.perf_counter() - started
    print(
        f"render: {render_s:.1f} s, {clip.frames} frames, timing={clip.timing} ({clip.timing_note})"
    )

    audio = video.read_audio(wav_path)
    settings = video.VideoSettings(width=1280, height=720, fps=FPS)
    started = time.perf_counter()
    video.compose_talking(clip_path, clip.face, audio, [], settings, final_path, quiet)
    compose_s = time.perf_counter() - started
    print(f"compose: {compose_s:.1f} s")

    portrait = talking_head.load_portrait(portrait_path)
    started = time.perf_counter()
    result = measure(clip_path, portrait)
    measure_s = time.perf_counter() - started
    opening: np.ndarray = result["opening"]  # type: ignore[assignment]
    ssim: np.ndarray = result["ssim"]  # type: ignore[assignment]

    mono = audio.samples.mean(axis=0)
    loudness = speech_timing.loudness_envelope(mono, audio.rate, FPS)
    n = min(len(opening), len(loudness))
    r, lag, by_lag = best_lag(opening, loudness)
    r0 = by_lag.get(0, float("nan"))
    lag_ms = lag * 1000 / FPS

    frame_rms = [
        float(
            np.sqrt(
                np.mean(mono[round(k * audio.rate / FPS) : round((k + 1) * audio.rate / FPS)] ** 2)
            )
        )
        for k in range(len(loudness))
    ]
    peak_db = 20 * math.log10(max(max(frame_rms), 1e-12))
    threshold_db = speech_timing.SILENCE_DBFS + SILENT_LOUDNESS * (
        peak_db - speech_timing.SILENCE_DBFS
    )
    stretches = silent_stretches(loudness[:n])
    loud_median = float(np.median(opening[:n][loudness[:n] >= 0.5]))
    closed_below = max(CLOSED_OPENING, CLOSED_RELATIVE * loud_median)
    print(
        f"closed = opening < {closed_below:.3f} (max of {CLOSED_OPENING} and "
        f"{CLOSED_RELATIVE} x the loud median {loud_median:.3f})"
    )
    closed = []
    for start, end in stretches:
        share = float(np.mean(opening[start:end] < closed_below))
        closed.append(share >= CLOSED_SHARE)
    closed_share = float(np.mean(closed)) if closed else float("nan")
    silent_frames = np.concatenate([np.arange(s, e) for s, e in stretches]) if stretches else []
    speech_frames = loudness[:n] >= 0.5

    video_start, audio_start = stream_starts(clip_path)

    render_x = duration / render_s
    video_x = duration / (render_s + compose_s)
    total_x = duration / (synth_s + render_s + compose_s)
    valid = ssim[np.isfinite(ssim)]
    ssim_mean = float(valid.mean()) if len(valid) else float("nan")
    ssim_min = float(valid.min()) if len(valid) else float("nan")
    worst = int(np.nanargmin(ssim)) if len(valid) else -1
    eyes_open = result["eyes"]  # type: ignore[index]
    # A blink, read off the pixels: the eyes' own SSIM against the portrait drops (the
    # mesh's lid points barely follow a closing lid, so its openness misses most blinks).
    eye_ssim: np.ndarray = result["eye_ssim"]  # type: ignore[assignment]
    rest_ssim: np.ndarray = result["rest_ssim"]  # type: ignore[assignment]
    eye_median = float(np.nanmedian(eye_ssim))
    blinking = (eyes_open < BLINK_SHARE * float(np.median(eyes_open))) | (
        eye_ssim < eye_median - BLINK_SSIM_DROP
    )
    open_ssim = ssim[np.isfinite(ssim) & ~blinking]
    ssim_open_min = float(open_ssim.min()) if len(open_ssim) else float("nan")
    rest_valid = rest_ssim[np.isfinite(rest_ssim)]
    rest_min = float(rest_valid.min()) if len(rest_valid) else float("nan")
    under = np.isfinite(ssim) & (ssim < GOALS["ssim"])

    rows = [
        ("lip-sync render speed", f"{render_x:.2f}× real time ({render_s:.1f} s)", "≥ 2×",
         render_x >= GOALS["render_x"]),
        ("opening vs loudness r (best lag)", f"{r:.3f} (r at lag 0: {r0:.3f})", "≥ 0.6",
         r >= GOALS["r"]),
        ("best lag", f"{lag_ms:+.0f} ms ({lag:+d} frames)", "|lag| ≤ 60 ms",
         abs(lag_ms) <= GOALS["lag_ms"]),
        ("silent stretches closed", f"{sum(closed)}/{len(closed)} = {closed_share:.0%}", "≥ 90%",
         closed_share >= GOALS["closed_share"]),
        ("identity SSIM mean", f"{ssim_mean:.3f}", "≥ 0.90", ssim_mean >= GOALS["ssim"]),
        ("identity SSIM min, eyes open", f"{ssim_open_min:.3f} ({int(blinking.sum())} blink "
         f"frames left out; with them {ssim_min:.3f} at frame {worst}; "
         f"{int(under.sum())} under 0.90, {int((under & blinking).sum())} of them blinks)",
         "≥ 0.90", ssim_open_min >= GOALS["ssim"]),
        ("identity SSIM min, outside the eyes", f"{rest_min:.3f} (the same region less the "
         "eyes and lids, every frame)", "≥ 0.90", rest_min >= GOALS["ssim"]),
        ("render + compose speed", f"{video_x:.2f}× real time ({render_s + compose_s:.1f} s)",
         "≥ 1×", video_x >= GOALS["video_x"]),
    ]  # fmt: skip
    print()
    print(f"{'figure':36} {'value':40} {'goal':14} verdict")
    print("-" * 100)
    for name, value, goal, ok in rows:
        print(f"{name:36} {value:40} {goal:14} {verdict(ok)}")
    print()
    print("details:")
    print(
        f"  narration {duration:.2f} s ({n} frames at {FPS} "
        f"fps); timing {clip.timing}: {clip.timing_note}"
    )
    print(
        f"  speech synthesis {synth_s:.1f} s ({duration / synth_s:.1f}× "
        f"real time; voice load {load_s:.1f} s, once per process)"
    )
    print(f"  compose_talking {compose_s:.1f} s ({duration / compose_s:.2f}× real time)")
    print(
        f"  speech + lip-sync + compose {synth_s + render_s + compose_s:.1f} "
        f"s = {total_x:.2f}× real time (script step not included)"
    )
    print(
        "  r by lag (ms): "
        + ", ".join(f"{k * 1000 // FPS:+d}:{v:.2f}" for k, v in sorted(by_lag.items()))
    )
    print(
        f"  mouth opening (mouth widths): portrait at rest {result['rest_opening']:.3f}; "
        f"output min {opening.min():.3f}, median {np.median(opening):.3f}, "
        f"p95 {np.percentile(opening, 95):.3f}, max {opening.max():.3f}"
    )
    if len(silent_frames):
        print(
            f"  opening on silent frames: median {np.median(opening[silent_frames]):.3f}, "
            f"share < {CLOSED_OPENING} {np.mean(opening[silent_frames] < CLOSED_OPENING):.0%}; "
            f"on loud frames (loudness ≥ 0.5): median {np.median(opening[:n][speech_frames]):.3f}"
        )
    print(
        f"  silence: loudness < {SILENT_LOUDNESS} = below "
        f"{threshold_db:.1f} dBFS (peak frame {peak_db:.1f} dBFS), "
        f"runs ≥ {SILENT_MIN_FRAMES * 1000 // FPS} ms; closed = opening < "
        f"{closed_below:.3f} on ≥ {CLOSED_SHARE:.0%} of the run's frames"
    )
    for (start, end), ok in zip(stretches, closed, strict=False):
        seg = opening[start:end]
        print(
            f"    {start / FPS:6.2f}-{end / FPS:6.2f} s  closed "
            f"frames {np.mean(seg < closed_below):4.0%}  "
            f"max opening {seg.max():.3f}  {'closed' if ok else 'OPEN'}"
        )
    print(
        f"  identity SSIM: p5 {np.nanpercentile(ssim, 5):.3f}, median "
        f"{np.nanmedian(ssim):.3f}; frames below 0.90: {int(np.sum(valid < 0.90))}/{len(valid)}"
    )
    print(
        f"  re-detection: {len(opening)} frames decoded, mesh lost "
        f"on {result['lost']}; measuring took {measure_s:.1f} s"
    )
    print(
        f"  clip MP4: first video pts {video_start * 1000:.1f} "
        f"ms, first audio pts {audio_start * 1000:.1f} ms"
    )
    if args.keep is not None:
        print(f"  files: {clip_path}, {final_path}")
    print()
    print(f"rerun: {command}")
    if args.keep is None:
        shutil.rmtree(work, ignore_errors=True)
    missed = [name for name, _, _, ok in rows if not ok]
    return 1 if (args.strict and missed) else 0


if __name__ == "__main__":
    sys.exit(main())
