"""Portraits made from a photograph for the face tests."""

from __future__ import annotations

import cv2
import numpy as np


def turned(image: np.ndarray, degrees: float) -> np.ndarray:
    """The head turned about a vertical axis by ``degrees``, as if it were a cylinder: each
    column of the face moves to where it would be seen after the turn (the far cheek
    narrows, the near one widens). The axis and radius are the astronaut's face, by eye."""
    height, width = image.shape[:2]
    centre, radius, turn = 225.0, 62.0, np.radians(degrees)
    xs, ys = np.meshgrid(np.arange(width, dtype=np.float32), np.arange(height, dtype=np.float32))
    seen = np.arcsin(np.clip((xs - centre) / radius, -1, 1))
    inside = (np.abs(xs - centre) < radius) & (seen - turn > -np.pi / 2)
    source = np.where(inside, centre + radius * np.sin(seen - turn), xs).astype(np.float32)
    return cv2.remap(image, source, ys, cv2.INTER_LINEAR)
