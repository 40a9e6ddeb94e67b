"""Lip-sync: a face (image or video) and a WAV → an MP4 whose mouth follows the speech.

One interface, :class:`LipSyncBackend`; a backend (SadTalker, Wav2Lip, InfiniteTalk...)
registers itself in :data:`BACKENDS` only when its weights are configured. None ships
with this build, so ``lipsync.gpu`` reports no backend and its nodes fail with
``backend_unavailable`` rather than produce a fake.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Protocol

Progress = Callable[[float, str], None]


class LipSyncBackend(Protocol):
    name: str

    def available(self) -> bool:
        """Whether its weights are configured and loadable on this worker."""
        ...

    def run(self, face: Path, audio: Path, output: Path, progress: Progress) -> Path:
        """Write the lip-synced MP4 at ``output`` and return it."""
        ...


BACKENDS: dict[str, LipSyncBackend] = {}


def available_backends() -> list[str]:
    return sorted(name for name, backend in BACKENDS.items() if backend.available())
