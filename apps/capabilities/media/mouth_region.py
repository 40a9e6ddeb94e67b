"""Where the mouth is, from a face mesh: the one place both lip-sync backends take it.

- :class:`MouthFrame`: the face's own frame of reference at the mouth (the eye line and
  its perpendicular, the corners' midpoint, corner-to-corner width). The CPU talking head
  moves lips along it, and the tests measure openings in it.
- :func:`crop_box`: the face crop a generative backend (MuseTalk) sees, the mesh box with
  room below the chin for the jaw to drop.
- :func:`mouth_box` and :func:`feathered_mask`: the pixels a generative backend may
  change (lips, jaw and chin with a margin) and the weight of its output there, 1 at the
  lips falling smoothly to exactly 0 at the box's edge, so every pixel outside the box is
  the portrait's own.

Coordinates are the image's pixels; boxes are integer ``(left, top, right, bottom)``
with ``right``/``bottom`` exclusive, inside the image.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from apps.capabilities.media import face as facemesh

IntBox = tuple[int, int, int, int]

# Margins of the region that may change, in mouth widths: sideways past the corners, up
# from the upper lip (short of the nostrils), and below the chin.
SIDE_MARGIN = 0.35
TOP_MARGIN = 0.25
CHIN_MARGIN = 0.10
# Share of the region's half-axes over which the mask fades to 0.
FEATHER = 0.45
# Room left below the mesh in the face crop (share of the face's height): the jaw opens.
CROP_CHIN_ROOM = 0.10


@dataclass(frozen=True)
class MouthFrame:
    centre: np.ndarray  # midpoint of the mouth corners, (x, y)
    ex: np.ndarray  # unit vector along the eye line, towards the face's left
    ey: np.ndarray  # unit vector down the face
    width: float  # corner to corner, px


def mouth_frame(points: np.ndarray) -> MouthFrame:
    """The frame of reference at the mouth of mesh ``points`` (468, 2)."""
    right_eye, left_eye = points[33].astype(np.float64), points[263].astype(np.float64)
    axis = left_eye - right_eye
    ex = axis / max(1e-6, float(np.linalg.norm(axis)))
    corners = points[list(facemesh.MOUTH_CORNERS)].astype(np.float64)
    return MouthFrame(
        centre=corners.mean(axis=0),
        ex=ex,
        ey=np.array([-ex[1], ex[0]]),
        width=float(np.linalg.norm(corners[1] - corners[0])),
    )


def _clip(box: tuple[float, float, float, float], shape: tuple[int, ...]) -> IntBox:
    height, width = shape[:2]
    left, top, right, bottom = box
    return (
        max(0, int(np.floor(left))),
        max(0, int(np.floor(top))),
        min(width, int(np.ceil(right))),
        min(height, int(np.ceil(bottom))),
    )


def crop_box(points: np.ndarray, shape: tuple[int, ...]) -> IntBox:
    """The face crop: the mesh's box, ``CROP_CHIN_ROOM`` of its height added below."""
    low, high = points.min(axis=0), points.max(axis=0)
    room = CROP_CHIN_ROOM * float(high[1] - low[1])
    return _clip((float(low[0]), float(low[1]), float(high[0]), float(high[1]) + room), shape)


def mouth_box(points: np.ndarray, shape: tuple[int, ...]) -> IntBox:
    """The pixels a generative lip-sync may change: the outer lips, widened by
    ``SIDE_MARGIN``, raised by ``TOP_MARGIN``, down to ``CHIN_MARGIN`` below the chin,
    and within the face crop."""
    lips = points[list(facemesh.LIPS_OUTER)]
    width = mouth_frame(points).width
    chin = float(points[facemesh.CHIN, 1])
    box = _clip(
        (
            float(lips[:, 0].min()) - SIDE_MARGIN * width,
            float(lips[:, 1].min()) - TOP_MARGIN * width,
            float(lips[:, 0].max()) + SIDE_MARGIN * width,
            max(chin, float(lips[:, 1].max())) + CHIN_MARGIN * width,
        ),
        shape,
    )
    crop = crop_box(points, shape)
    return (max(box[0], crop[0]), max(box[1], crop[1]), min(box[2], crop[2]), min(box[3], crop[3]))


def feathered_mask(box: IntBox) -> np.ndarray:
    """The weight (float32, the box's height × width) of the generated pixels in ``box``:
    1 inside the inscribed ellipse's inner part, a smoothstep to 0 at the ellipse, 0 in
    the corners; its outer rows and columns are 0 so the seam cannot show."""
    left, top, right, bottom = box
    height, width = bottom - top, right - left
    ys = (np.arange(height, dtype=np.float64) + 0.5 - height / 2) / (height / 2)
    xs = (np.arange(width, dtype=np.float64) + 0.5 - width / 2) / (width / 2)
    radius = np.sqrt(xs[None, :] ** 2 + ys[:, None] ** 2)
    x = np.clip((1.0 - radius) / FEATHER, 0.0, 1.0)
    mask = x * x * (3.0 - 2.0 * x)
    mask[[0, -1], :] = 0.0
    mask[:, [0, -1]] = 0.0
    return mask.astype(np.float32)
