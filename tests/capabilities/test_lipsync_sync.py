"""The CPU talking head on a real photograph (scikit-image's astronaut) and on variants
made from it, with real Piper speech, the real face models and the real encoder; every
check decodes the MP4 it produced and re-detects the face in it."""

from __future__ import annotations

import io
import shutil
from pathlib import Path

import av
import cv2
import numpy as np
import pytest
from django.test import override_settings
from PIL import Image
from skimage import data

from apps.capabilities.media import face as facemesh
from apps.capabilities.media import face_models, speech_timing, talking_head, video
from apps.capabilities.media.tts_engines import PiperEngine, Voice, write_wav
from apps.capabilities.services.lipsync_sync import handler
from myspinbot.errors import PermanentError
from testkit.contexts import make_service_run
from testkit.mouth import openings
from tests.support.portraits import turned

SENTENCE = "Maybe the big blue balloon will float over the moon."
PAD = 0.5


def astronaut() -> np.ndarray:
    return np.ascontiguousarray(data.astronaut())


def variant(name: str) -> np.ndarray:
    """The photograph, changed as a user's upload might be."""
    image = astronaut()
    height, width = image.shape[:2]
    if name == "photo":
        return image
    if name == "scaled_up":
        return cv2.resize(image, (width * 2, height * 2), interpolation=cv2.INTER_CUBIC)
    if name == "scaled_down":
        return cv2.resize(image, (width // 2, height // 2), interpolation=cv2.INTER_AREA)
    if name in ("rotated_left", "rotated_right"):
        angle = 15 if name == "rotated_left" else -15
        matrix = cv2.getRotationMatrix2D((width / 2, height / 2), angle, 1.0)
        return cv2.warpAffine(image, matrix, (width, height), borderMode=cv2.BORDER_REFLECT)
    if name == "mirrored":
        return np.ascontiguousarray(image[:, ::-1])
    if name == "darkened":
        return (image.astype(np.float32) * 0.35).astype(np.uint8)
    if name == "portrait_1080x1920":
        # A phone's vertical photo: the middle 9:16 of the picture, at 1080x1920.
        keep = round(height * 9 / 16)
        left = (width - keep) // 2
        return cv2.resize(image[:, left : left + keep], (1080, 1920), interpolation=cv2.INTER_CUBIC)
    if name == "two_faces":
        small = cv2.resize(image, (width * 3 // 4, height * 3 // 4), interpolation=cv2.INTER_AREA)
        canvas = np.full((height, width + small.shape[1], 3), 128, np.uint8)
        canvas[:, :width] = image
        canvas[: small.shape[0], width:] = small
        return canvas
    if name == "no_face":
        return np.ascontiguousarray(image[300:, 300:])  # the suit and the flag
    if name == "turned_away":
        return turned(image, 55)
    raise AssertionError(name)


# What each variant must give: faces found, or the named error.
EXPECTED = {
    "photo": 1,
    "scaled_up": 1,
    "rotated_left": 1,
    "rotated_right": 1,
    "mirrored": 1,
    "darkened": 1,
    "portrait_1080x1920": 1,
    "two_faces": 2,
    "scaled_down": "face_too_small",
    "no_face": "no_face",
    "turned_away": "face_turned_away",
}


@pytest.fixture(scope="module")
def narration(tmp_path_factory: pytest.TempPathFactory) -> Path:
    samples, rate = PiperEngine().synthesize(SENTENCE, Voice())
    pad = np.zeros(round(rate * PAD), samples.dtype)
    path = tmp_path_factory.mktemp("narration") / "narration.wav"
    write_wav(path, np.concatenate([pad, samples, pad]), rate)
    return path


@pytest.fixture
def portrait(tmp_path: Path) -> Path:
    """The photograph as the PNG a user uploads."""
    path = tmp_path / "portrait.png"
    path.write_bytes(png(astronaut()))
    return path


def png(image: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    Image.fromarray(image).save(buffer, format="PNG")
    return buffer.getvalue()


def frames_of(mp4: bytes | Path) -> list[np.ndarray]:
    source = io.BytesIO(mp4) if isinstance(mp4, bytes) else str(mp4)
    with av.open(source) as container:
        return [frame.to_ndarray(format="rgb24") for frame in container.decode(video=0)]


# --- finding the face -----------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_each_variant_of_the_photograph_gets_its_outcome(name: str) -> None:
    image = variant(name)
    expected = EXPECTED[name]

    if isinstance(expected, str):
        with pytest.raises(PermanentError) as caught:
            facemesh.find_face(image)
        assert caught.value.code == expected
        return
    found = facemesh.find_face(image)

    assert found.faces == expected
    assert abs(found.yaw) < 0.2
    left, top, right, bottom = found.box
    mouth = found.region(facemesh.LIPS_OUTER)
    # The mouth lies inside the face box, in its lower half.
    assert left < mouth[0] < mouth[2] < right
    assert (top + bottom) / 2 < mouth[1] < mouth[3] <= bottom


def test_the_largest_of_two_faces_is_used_and_said() -> None:
    found = facemesh.find_face(variant("two_faces"))

    assert found.box[2] < astronaut().shape[1]  # the full-size face, on the left
    assert facemesh.describe(found) == "several faces (2): the largest is used"


def test_a_face_too_small_names_its_size_and_the_minimum() -> None:
    with pytest.raises(PermanentError) as caught:
        facemesh.find_face(variant("scaled_down"))

    assert caught.value.message == (
        f"face too small ({caught.value.details['width_px']} px, need {facemesh.MIN_FACE_PX})"
    )
    assert 30 < caught.value.details["width_px"] < facemesh.MIN_FACE_PX


def test_a_rotated_face_is_meshed_upright_along_its_eyes() -> None:
    upright = facemesh.find_face(variant("photo")).landmarks
    for name, angle in (("rotated_left", 15), ("rotated_right", -15)):
        points = facemesh.find_face(variant(name)).landmarks
        eyes = points[263] - points[33]
        measured = -np.degrees(np.arctan2(eyes[1], eyes[0]))
        reference = upright[263] - upright[33]
        assert measured - (-np.degrees(np.arctan2(reference[1], reference[0]))) == pytest.approx(
            angle, abs=3
        )


def test_missing_or_altered_face_models_are_named_with_the_fix(tmp_path: Path) -> None:
    with override_settings(MYSPINBOT_FACE_MODEL_DIR=str(tmp_path)):
        with pytest.raises(face_models.FaceModelMissing, match="face_models install"):
            face_models.path("face_landmark.tflite")
        real = face_models.default_dir() / "face_landmark.tflite"
        altered = tmp_path / "face_landmark.tflite"
        content = bytearray(real.read_bytes())
        content[len(content) // 2] ^= 0xFF
        altered.write_bytes(bytes(content))
        assert face_models.status()["face_landmark.tflite"] == "corrupt"
        shutil.copy(real, altered)
        assert face_models.status()["face_landmark.tflite"] == "present"


# --- the talking head ---------------------------------------------------------------------


def test_the_photograph_speaks_lips_follow_the_speech_and_rest_in_silence(
    narration: Path, portrait: Path, tmp_path: Path
) -> None:
    output = tmp_path / "talking.mp4"

    clip = talking_head.render(portrait, narration, SENTENCE, output, lambda f, m: None)

    frames = frames_of(output)
    assert (clip.width, clip.height, clip.timing) == (512, 512, "alignment")
    assert len(frames) == clip.frames == round(clip.duration_seconds * 25)
    with av.open(str(output)) as container:
        assert [s.type for s in container.streams] == ["video", "audio"]
    opening = openings(frames)
    audio = video.read_audio(narration)
    loudness = speech_timing.loudness_envelope(audio.samples.mean(axis=0), audio.rate, 25)
    loudness = loudness[: len(opening)]
    silent = slice(0, int(PAD * 25) - 2)
    # In the leading silence the mouth is shut (the landmark model reads about 0.07 of a
    # mouth width on these shut lips; the photo's own smile reads 0.19); while speaking
    # it opens, and it follows the loudness.
    assert opening[silent].max() < 0.1 < 0.15 < opening.max()
    assert opening[silent].max() < 0.5 * opening.max()
    assert float(np.corrcoef(opening, loudness)[0, 1]) > 0.5
    # Words were aligned in order.
    assert [w["text"] for w in clip.words][:4] == ["maybe", "the", "big", "blue"]


def test_outside_the_mouth_and_jaw_the_face_stays_the_photograph(
    narration: Path, portrait: Path, tmp_path: Path
) -> None:
    output = tmp_path / "talking.mp4"
    talking_head.render(portrait, narration, SENTENCE, output, lambda f, m: None)
    source = astronaut()
    found = facemesh.find_face(source)
    left, top, right, _ = (int(v) for v in found.box)
    eyes_band = (slice(top, int(found.landmarks[1, 1])), slice(left, right))  # above the nose tip

    for frame in frames_of(output)[::10]:
        moved = facemesh.find_face(frame).landmarks
        matrix, _ = cv2.estimateAffinePartial2D(
            moved[[33, 263, 1, 168, 10]], found.landmarks[[33, 263, 1, 168, 10]]
        )
        aligned = cv2.warpAffine(frame, matrix, (source.shape[1], source.shape[0]))
        difference = np.abs(aligned[eyes_band].astype(float) - source[eyes_band]).mean()
        assert difference < 12  # encoding, resampling and blinks; no drift of identity


def test_the_same_inputs_give_the_same_video(
    narration: Path, portrait: Path, tmp_path: Path
) -> None:
    talking_head.render(portrait, narration, SENTENCE, tmp_path / "a.mp4", lambda f, m: None)
    talking_head.render(portrait, narration, SENTENCE, tmp_path / "b.mp4", lambda f, m: None)

    assert (tmp_path / "a.mp4").read_bytes() == (tmp_path / "b.mp4").read_bytes()


def test_without_text_the_mouth_follows_the_loudness_and_says_so(
    narration: Path, portrait: Path, tmp_path: Path
) -> None:

    clip = talking_head.render(portrait, narration, "", tmp_path / "t.mp4", lambda f, m: None)

    assert (clip.timing, clip.timing_note) == ("loudness", "no narration text was given")
    opening = openings(frames_of(tmp_path / "t.mp4"))
    assert opening[: int(PAD * 25) - 2].max() < 0.1 < 0.15 < opening.max()


@pytest.mark.django_db
@pytest.mark.parametrize(
    "name", ["photo", "portrait_1080x1920", "two_faces", "no_face", "scaled_down", "turned_away"]
)
def test_the_service_makes_a_talking_video_or_names_the_problem(name: str, narration: Path) -> None:
    run = make_service_run("lipsync.sync", {"preset": "ultrafast"})
    image = variant(name)
    run.context.inputs = {
        "photos": [run.upload("portrait.png", png(image), "image/png")],
        "speech": {
            "audio": run.upload("narration.wav", narration.read_bytes(), "audio/wav"),
            "cues": [{"start": 0.5, "end": 3.0, "text": SENTENCE}],
        },
    }
    expected = EXPECTED[name]

    if isinstance(expected, str):
        with pytest.raises(PermanentError) as caught:
            handler.run(run.context)
        assert caught.value.code == expected
        return
    output = handler.run(run.context)

    assert (output["backend"], output["timing"]) == ("face-mesh", "alignment")
    assert (output["width"], output["height"]) == (image.shape[1] // 2 * 2, image.shape[0] // 2 * 2)
    assert output["face"]["faces"] == expected
    frames = frames_of(run.read(output["video"]))
    assert len(frames) == output["frames"]
    assert run.progress.reports[-1] == (1.0, "talking head ready")


def test_a_keyframe_from_a_predecessor_is_a_face_too() -> None:
    class Context:
        inputs = {
            "keyframe": {"keyframes": [{"artifact": "k1"}, {"artifact": "k2"}]},
            "speech": {"audio": {"artifact": "a"}, "cues": [{"text": "Hi"}, {"text": "there"}]},
        }

    face, audio, text = handler.find_inputs(Context())  # type: ignore[arg-type]

    assert (face, audio, text) == ({"artifact": "k1"}, {"artifact": "a"}, "Hi there")


# --- framing --------------------------------------------------------------------------------


@pytest.mark.parametrize("size", [(1280, 720), (1080, 1920), (1080, 1080)])
def test_framing_keeps_the_face_in_and_the_captions_off_the_mouth(size: tuple[int, int]) -> None:
    width, height = size
    summary = facemesh.find_face(astronaut()).summary()

    framing = video.face_framing(512, 512, summary, width, height)

    left, top, right, bottom = framing.box
    assert 0 <= left < right <= 512
    assert 0 <= top < bottom <= 512
    assert (right - left) / (bottom - top) == pytest.approx(width / height, rel=0.03)
    box = summary["box"]
    assert left <= box[0]
    assert box[2] <= right
    assert top <= box[1]
    assert summary["chin_y"] <= bottom
    clear_top, clear_bottom = framing.keep_clear
    long_text = "A caption long enough to wrap over several lines of the frame, " * 3
    overlay = video.CaptionOverlay(long_text, width, height, framing.keep_clear)
    assert overlay.top >= clear_bottom or overlay.top + overlay.height <= clear_top
