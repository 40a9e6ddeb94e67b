"""Lip-sync on a GPU worker: a portrait, where its face and mouth are, and a narration →
the frames of the portrait speaking it.

One interface, :class:`LipSyncBackend`; a backend is in :data:`BACKENDS` and offered
(:func:`available_backends`) only while its weights are present under the model root.
The service (``lipsync.gpu``) finds the face with the CPU lip-sync's face mesh, hands a
backend plain arrays (:class:`LipSyncJob`) and writes the MP4 with the narration, so a
backend holds only its model code.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Protocol

import numpy as np

from gpu_tasks import loader, musetalk

Progress = Callable[[float, str], None]
Box = tuple[int, int, int, int]
AUDIO_RATE = musetalk.AUDIO_RATE


@dataclass(frozen=True)
class LipSyncJob:
    image: np.ndarray  # the portrait, RGB uint8 (height, width, 3)
    crop: Box  # the face crop (left, top, right, bottom; exclusive), in its pixels
    mouth: Box  # the region that may change, inside ``crop``
    mask: np.ndarray  # float32 weight of the generated pixels, the mouth box's size
    samples: np.ndarray  # the narration, float32 mono at AUDIO_RATE
    fps: int


class LipSyncBackend(Protocol):
    name: str

    def available(self) -> bool:
        """Whether its weights are present on this worker."""
        ...

    def frames(self, job: LipSyncJob, progress: Progress) -> Iterator[np.ndarray]:
        """The clip's frames (RGB uint8, the portrait's size), one every ``1/fps`` s of
        the narration."""
        ...


class MuseTalkBackend:
    """MuseTalk v1.5 (:mod:`gpu_tasks.musetalk`), MIT code and weights."""

    name = "musetalk"

    def available(self) -> bool:
        return musetalk.weights_present(loader.model_root())

    def frames(self, job: LipSyncJob, progress: Progress) -> Iterator[np.ndarray]:
        model = loader.load_musetalk()
        return musetalk.render(
            model, job.image, job.crop, job.mouth, job.mask, job.samples, job.fps, progress
        )


BACKENDS: dict[str, LipSyncBackend] = {"musetalk": MuseTalkBackend()}


def available_backends() -> list[str]:
    return sorted(name for name, backend in BACKENDS.items() if backend.available())
