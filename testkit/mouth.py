"""How open a mouth is in a video's frames, measured the way a viewer's tracker would:
the face re-meshed in every frame (the detector on the first, then tracking from the
previous frame's mesh). Used by the talking-head tests and bench/lipsync.py."""

from __future__ import annotations

import numpy as np

from apps.capabilities.media import face as facemesh
from apps.capabilities.media import mouth_region

# Upper and lower inner-lip points facing each other at the middle of the mouth.
LIP_PAIRS = ((13, 14), (82, 87), (312, 317))


def mouth_opening(points: np.ndarray) -> float:
    """The inner lips' gap along the face's own vertical, over the mouth's width."""
    mouth = mouth_region.mouth_frame(points)
    gap = np.mean([float((points[low] - points[up]) @ mouth.ey) for up, low in LIP_PAIRS])
    return float(gap / max(mouth.width, 1e-6))


def openings(frames: list[np.ndarray]) -> np.ndarray:
    """The mouth opening of every frame."""
    points = facemesh.find_face(frames[0]).landmarks
    result = []
    for frame in frames:
        points, _ = facemesh.track(frame, points)
        result.append(mouth_opening(points))
    return np.array(result)
