"""How open a mouth is in a video's frames, measured the way a viewer's tracker would:
the face re-meshed in every frame (the detector on the first, then tracking from the
previous frame's mesh). Used by the talking-head tests and bench/lipsync.py."""

from __future__ import annotations

import numpy as np

from apps.capabilities.media import face as facemesh

# Upper and lower inner-lip points facing each other at the middle of the mouth.
LIP_PAIRS = ((13, 14), (82, 87), (312, 317))


def mouth_opening(points: np.ndarray) -> float:
    """The inner lips' gap along the face's own vertical, over the mouth's width."""
    right_eye, left_eye = points[33], points[263]
    ex = (left_eye - right_eye) / max(1e-6, float(np.linalg.norm(left_eye - right_eye)))
    ey = np.array([-ex[1], ex[0]])
    gap = np.mean([float((points[low] - points[up]) @ ey) for up, low in LIP_PAIRS])
    width = float(np.linalg.norm(points[291] - points[61]))
    return float(gap / max(width, 1e-6))


def openings(frames: list[np.ndarray]) -> np.ndarray:
    """The mouth opening of every frame."""
    points = facemesh.find_face(frames[0]).landmarks
    result = []
    for frame in frames:
        points, _ = facemesh.track(frame, points)
        result.append(mouth_opening(points))
    return np.array(result)
