"""Finding the face in a portrait: MediaPipe's face detector and its 468-point face mesh,
run with LiteRT on the CPU (the files come from :mod:`face_models`).

:func:`find_face` is the one entry point: detect (short-range model, then the full-range
one for smaller faces), take the largest face, crop it upright along the eye line, run the
mesh, then crop again around the mesh (the tracking step MediaPipe uses) for a steadier
fit. Problems a user can fix are :class:`~myspinbot.errors.PermanentError` with a named
code: ``no_face``, ``face_too_small``, ``face_turned_away``.
"""

from __future__ import annotations

import math
import threading
from dataclasses import dataclass, field
from typing import Any

import cv2
import numpy as np

from apps.capabilities.media import face_models, probe
from myspinbot.errors import PermanentError

# A face narrower than this (eye line, mesh width in px) has too few mouth pixels to move.
MIN_FACE_PX = 64
# Images are scaled to at most this long side before anything else.
MAX_SIDE = 2048
# |yaw| measure over which the face is "turned away": the nose's offset from the middle of
# the cheeks, as a fraction of half the face width (0 frontal, 1 full profile).
MAX_YAW = 0.55
DETECTION_SCORE = 0.5
MESH_PRESENCE = 0.5
MESH_SIZE = 192
ROI_SCALE = 1.5

# Mesh indices (MediaPipe's canonical face mesh).
LIPS_OUTER = (
    61,
    146,
    91,
    181,
    84,
    17,
    314,
    405,
    321,
    375,
    291,
    409,
    270,
    269,
    267,
    0,
    37,
    39,
    40,
    185,
)
LIPS_INNER_UPPER = (78, 191, 80, 81, 82, 13, 312, 311, 310, 415, 308)
LIPS_INNER_LOWER = (308, 324, 318, 402, 317, 14, 87, 178, 88, 95, 78)
UPPER_LIP = (
    61,
    185,
    40,
    39,
    37,
    0,
    267,
    269,
    270,
    409,
    291,
    78,
    191,
    80,
    81,
    82,
    13,
    312,
    311,
    310,
    415,
    308,
)
LOWER_LIP = (146, 91, 181, 84, 17, 314, 405, 321, 375, 324, 318, 402, 317, 14, 87, 178, 88, 95)
MOUTH_CORNERS = (61, 291)
JAW = (172, 136, 150, 149, 176, 148, 152, 377, 400, 378, 379, 365, 397)
CHIN = 152
NOSE_TIP = 1
CHEEKS = (234, 454)
RIGHT_EYE_UPPER = (246, 161, 160, 159, 158, 157, 173)
RIGHT_EYE_LOWER = (7, 163, 144, 145, 153, 154, 155)
LEFT_EYE_UPPER = (466, 388, 387, 386, 385, 384, 398)
LEFT_EYE_LOWER = (249, 390, 373, 374, 380, 381, 382)
EYE_CORNERS = (33, 133, 362, 263)
FACE_OVAL = (
    10,
    338,
    297,
    332,
    284,
    251,
    389,
    356,
    454,
    323,
    361,
    288,
    397,
    365,
    379,
    378,
    400,
    377,
    152,
    148,
    176,
    149,
    150,
    136,
    172,
    58,
    132,
    93,
    234,
    127,
    162,
    21,
    54,
    103,
    67,
    109,
)


@dataclass(frozen=True)
class Face:
    """The face found in an image; coordinates in the image's own pixels."""

    box: tuple[float, float, float, float]  # left, top, right, bottom of the mesh
    landmarks: np.ndarray = field(repr=False)  # (468, 2) float32, x and y
    score: float
    yaw: float  # signed, see MAX_YAW
    faces: int  # how many faces the detector found (the largest is this one)

    @property
    def width(self) -> float:
        return self.box[2] - self.box[0]

    @property
    def mouth_width(self) -> float:
        left, right = self.landmarks[list(MOUTH_CORNERS)]
        return float(np.hypot(*(right - left)))

    def region(self, indices: tuple[int, ...]) -> tuple[float, float, float, float]:
        points = self.landmarks[list(indices)]
        return (
            float(points[:, 0].min()),
            float(points[:, 1].min()),
            float(points[:, 0].max()),
            float(points[:, 1].max()),
        )

    def summary(self) -> dict[str, Any]:
        """The JSON form artifacts and the API carry: face and mouth boxes, counts."""
        return {
            "box": [round(v, 1) for v in self.box],
            "mouth": [round(v, 1) for v in self.region(LIPS_OUTER)],
            "chin_y": round(float(self.landmarks[CHIN, 1]), 1),
            "width_px": round(self.width, 1),
            "score": round(self.score, 3),
            "yaw": round(self.yaw, 3),
            "faces": self.faces,
        }


# --- Models -------------------------------------------------------------------------------


class _Model:
    """One LiteRT interpreter per file and process; calls are serialised by a lock."""

    def __init__(self, name: str) -> None:
        from ai_edge_litert.interpreter import Interpreter

        self.interpreter = Interpreter(model_path=str(face_models.path(name)), num_threads=1)
        self.interpreter.allocate_tensors()
        self.input = self.interpreter.get_input_details()[0]["index"]
        self.outputs = [d["index"] for d in self.interpreter.get_output_details()]
        self.lock = threading.Lock()

    def __call__(self, tensor: np.ndarray) -> list[np.ndarray]:
        with self.lock:
            self.interpreter.set_tensor(self.input, tensor[None].astype(np.float32))
            self.interpreter.invoke()
            return [self.interpreter.get_tensor(index)[0].copy() for index in self.outputs]


_models: dict[str, _Model] = {}
_models_lock = threading.Lock()


def _model(name: str) -> _Model:
    with _models_lock:
        if name not in _models:
            try:
                _models[name] = _Model(name)
            except face_models.FaceModelMissing as error:
                raise PermanentError("model_unavailable", str(error)) from None
        return _models[name]


# --- Detection ----------------------------------------------------------------------------


@dataclass(frozen=True)
class _Detector:
    file: str
    size: int
    strides: tuple[int, ...]
    per_cell: tuple[int, ...]


SHORT_RANGE = _Detector("face_detection_short_range.tflite", 128, (8, 16), (2, 6))
FULL_RANGE = _Detector("face_detection_full_range_sparse.tflite", 192, (4,), (1,))


def _anchors(detector: _Detector) -> np.ndarray:
    centres = []
    for stride, count in zip(detector.strides, detector.per_cell, strict=True):
        cells = math.ceil(detector.size / stride)
        ys, xs = np.mgrid[0:cells, 0:cells]
        grid = np.stack([(xs + 0.5) / cells, (ys + 0.5) / cells], axis=-1).reshape(-1, 1, 2)
        centres.append(np.repeat(grid, count, axis=1).reshape(-1, 2))
    return np.concatenate(centres).astype(np.float32)


_ANCHORS = {detector.file: _anchors(detector) for detector in (SHORT_RANGE, FULL_RANGE)}


@dataclass(frozen=True)
class Detection:
    box: np.ndarray  # x0, y0, x1, y1 in image px
    eyes: np.ndarray  # (2, 2): the person's right eye, then left eye
    score: float

    @property
    def area(self) -> float:
        return float(max(0.0, self.box[2] - self.box[0]) * max(0.0, self.box[3] - self.box[1]))


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return float(inter / union) if union > 0 else 0.0


def detect(rgb: np.ndarray, detector: _Detector = SHORT_RANGE) -> list[Detection]:
    """Faces in ``rgb`` (uint8, H×W×3), largest first, after weighted non-max suppression."""
    height, width = rgb.shape[:2]
    side = max(height, width)
    # Letterbox to a square so the face keeps its shape.
    square = np.zeros((side, side, 3), np.uint8)
    top, left = (side - height) // 2, (side - width) // 2
    square[top : top + height, left : left + width] = rgb
    tensor = cv2.resize(square, (detector.size, detector.size), interpolation=cv2.INTER_AREA)
    raw_boxes, raw_scores = _model(detector.file)(tensor.astype(np.float32) / 127.5 - 1.0)
    scores = 1.0 / (1.0 + np.exp(-np.clip(raw_scores[:, 0].astype(np.float64), -100, 100)))
    anchors = _ANCHORS[detector.file]
    keep = np.flatnonzero(scores >= DETECTION_SCORE)
    candidates = []
    for index in keep[np.argsort(-scores[keep])]:
        raw = raw_boxes[index] / detector.size
        cx, cy = raw[0] + anchors[index, 0], raw[1] + anchors[index, 1]
        w, h = raw[2], raw[3]
        box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2]) * side
        box -= [left, top, left, top]
        eyes = (raw[4:8].reshape(2, 2) + anchors[index]) * side - [left, top]
        candidates.append((box, eyes, float(scores[index])))
    faces: list[Detection] = []
    while candidates:
        box, eyes, score = candidates[0]
        group = [c for c in candidates if _iou(box, c[0]) > 0.3]
        candidates = [c for c in candidates if _iou(box, c[0]) <= 0.3]
        weights = np.array([c[2] for c in group])
        faces.append(
            Detection(
                box=np.average([c[0] for c in group], axis=0, weights=weights),
                eyes=np.average([c[1] for c in group], axis=0, weights=weights),
                score=score,
            )
        )
    faces.sort(key=lambda d: -d.area)
    return faces


# --- The mesh -----------------------------------------------------------------------------


def _roi_transform(centre: np.ndarray, size: float, angle: float) -> np.ndarray:
    """2×3 affine mapping mesh-crop pixels (0..MESH_SIZE) to image pixels."""
    cos, sin = math.cos(angle), math.sin(angle)
    scale = size / MESH_SIZE
    return np.array(
        [
            [cos * scale, -sin * scale, centre[0] - (cos - sin) * size / 2],
            [sin * scale, cos * scale, centre[1] - (sin + cos) * size / 2],
        ],
        np.float64,
    )


def mesh(
    rgb: np.ndarray, centre: np.ndarray, size: float, angle: float
) -> tuple[np.ndarray, float]:
    """The 468 landmarks (image px) in the square ROI, and the model's face presence."""
    to_image = _roi_transform(centre, size, angle)
    crop = cv2.warpAffine(
        rgb,
        to_image,
        (MESH_SIZE, MESH_SIZE),
        flags=cv2.INTER_LINEAR | cv2.WARP_INVERSE_MAP,
        borderMode=cv2.BORDER_CONSTANT,
    )
    points, presence = _model("face_landmark.tflite")(crop.astype(np.float32) / 255.0)
    xy = points.reshape(-1, 3)[:, :2].astype(np.float64)
    image_xy = xy @ to_image[:, :2].T + to_image[:, 2]
    return image_xy.astype(np.float32), float(1.0 / (1.0 + math.exp(-float(presence.ravel()[0]))))


def _roi_from_landmarks(points: np.ndarray) -> tuple[np.ndarray, float, float]:
    right, left = points[33], points[263]
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    cos, sin = math.cos(-angle), math.sin(-angle)
    rotated = points @ np.array([[cos, sin], [-sin, cos]])
    low, high = rotated.min(axis=0), rotated.max(axis=0)
    centre_r = (low + high) / 2
    centre = centre_r @ np.array([[cos, -sin], [sin, cos]])
    return centre, float(max(high - low)) * ROI_SCALE, angle


def landmarks(rgb: np.ndarray, detection: Detection) -> tuple[np.ndarray, float]:
    """Mesh the detected face, then mesh again around the first mesh (a steadier fit)."""
    right, left = detection.eyes
    angle = math.atan2(float(left[1] - right[1]), float(left[0] - right[0]))
    box = detection.box
    centre = np.array([(box[0] + box[2]) / 2, (box[1] + box[3]) / 2])
    size = float(max(box[2] - box[0], box[3] - box[1])) * ROI_SCALE
    points, presence = mesh(rgb, centre, size, angle)
    return track(rgb, points) if presence >= MESH_PRESENCE else (points, presence)


def track(rgb: np.ndarray, previous: np.ndarray) -> tuple[np.ndarray, float]:
    """Mesh the face again in a ROI built from ``previous`` landmarks (a video's next frame,
    or the refinement pass)."""
    centre, size, angle = _roi_from_landmarks(previous)
    return mesh(rgb, centre, size, angle)


def yaw(points: np.ndarray) -> float:
    """The nose's offset from the middle of the cheeks along the eye line, as a fraction of
    half the face width: about sin(yaw)."""
    right, left = points[list(CHEEKS)]
    axis = left - right
    half = float(np.linalg.norm(axis)) / 2
    if half <= 0:
        return 1.0
    offset = float(np.dot(points[NOSE_TIP] - (right + left) / 2, axis / (2 * half)))
    return offset / half


# --- The entry point ----------------------------------------------------------------------


def as_rgb(image: Any) -> np.ndarray:
    """A uint8 H×W×3 array from a Pillow image or an array."""
    array = np.asarray(image.convert("RGB")) if hasattr(image, "convert") else np.asarray(image)
    if array.ndim == 2:
        array = np.repeat(array[..., None], 3, axis=2)
    return np.ascontiguousarray(array[..., :3], dtype=np.uint8)


def find_face(rgb: np.ndarray, *, min_face: int = MIN_FACE_PX) -> Face:
    """The largest face in ``rgb``, meshed. Raises ``PermanentError``: ``no_face``,
    ``face_too_small`` (width in px), ``face_turned_away``."""
    height, width = rgb.shape[:2]
    scale = min(1.0, MAX_SIDE / max(height, width))
    work = (
        rgb
        if scale == 1.0
        else cv2.resize(rgb, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    )
    detections = detect(work) or detect(work, FULL_RANGE)
    if not detections:
        raise PermanentError("no_face", "no face found in the image")
    best = detections[0]
    points, presence = landmarks(work, best)
    if presence < MESH_PRESENCE:
        raise PermanentError("no_face", "no face found in the image (the face mesh did not fit)")
    points = points / scale
    low, high = points.min(axis=0), points.max(axis=0)
    face = Face(
        box=(float(low[0]), float(low[1]), float(high[0]), float(high[1])),
        landmarks=points,
        score=best.score,
        yaw=yaw(points),
        faces=len(detections),
    )
    # Turned first: a turned face also looks narrow, and turning to the camera is the fix.
    if abs(face.yaw) > MAX_YAW:
        raise PermanentError(
            "face_turned_away",
            "face turned away: the portrait must look at the camera",
            details={"yaw": round(face.yaw, 2)},
        )
    right, left = points[list(CHEEKS)]
    face_px = float(np.linalg.norm(left - right))
    if face_px < min_face:
        raise PermanentError(
            "face_too_small",
            f"face too small ({face_px:.0f} px, need {min_face})",
            details={"width_px": round(face_px), "min_px": min_face},
        )
    return face


def describe(face: Face) -> str:
    """A sentence for the user about what was found."""
    if face.faces > 1:
        return f"several faces ({face.faces}): the largest is used"
    return "face found"


# Uploads are checked on a copy scaled to at most this long side (fast, on the web process).
CHECK_SIDE = 1280


def check_portrait(stream: Any) -> dict[str, Any]:
    """What a user should know about an uploaded portrait, before any job: whether a face
    is found (and where, in the image's own pixels), or why not. Never raises for an
    image without a usable face: ``found`` is false and ``code``/``message`` say why."""
    from PIL import Image, ImageOps

    stream.seek(0)
    with probe.open_image(stream) as opened:
        width, height = opened.size
        scale = min(1.0, CHECK_SIDE / max(width, height))
        if scale < 0.5 and opened.format == "JPEG":
            # libjpeg scales while decoding (by 1/2..1/8): fast for big photos.
            opened.draft("RGB", (math.ceil(width * scale), math.ceil(height * scale)))
        image = ImageOps.exif_transpose(opened).convert("RGB")
    if (image.width > image.height) != (width > height):
        width, height = height, width  # EXIF turned it upright
    target = max(1, round(width * scale)), max(1, round(height * scale))
    if image.size != target:
        image = image.resize(target, resample=Image.Resampling.BILINEAR)
    stream.seek(0)
    answer: dict[str, Any] = {"width": width, "height": height}
    try:
        found = find_face(as_rgb(image), min_face=max(1, math.ceil(MIN_FACE_PX * scale)))
    except PermanentError as error:
        message = error.message
        if error.code == "face_too_small":
            size = round(error.details["width_px"] / scale)
            message = f"face too small ({size} px, need {MIN_FACE_PX})"
        return {**answer, "found": False, "code": error.code, "message": message}
    return {
        **answer,
        "found": True,
        "code": "several_faces" if found.faces > 1 else "face_found",
        "message": describe(found),
        "box": [round(v / scale, 1) for v in found.box],
        "faces": found.faces,
    }
