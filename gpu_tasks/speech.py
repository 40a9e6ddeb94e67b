"""GPU speech engines: text + a voice profile's reference clip → a WAV in that voice.

One interface, :class:`CloningEngine`; the engines are listed in :data:`ENGINES` and
offered when their weights are present (``available()``): F5-TTS
(:mod:`gpu_tasks.cloning`) from the model root. The worker reports the available ones
(backend kind ``tts_gpu``); with one, it offers ``tts.clone`` and the planner uses that in
place of the CPU engines of ``tts.speak``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from gpu_tasks.cloning import F5TTSEngine


class CloningEngine(Protocol):
    name: str

    def available(self) -> bool:
        """Whether its weights are configured and loadable on this worker."""
        ...

    def synthesize(self, text: str, reference: Path, reference_text: str) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the voice of ``reference``; float32 mono samples and rate."""
        ...


ENGINES: dict[str, CloningEngine] = {F5TTSEngine.name: F5TTSEngine()}


def available_engines() -> list[str]:
    return sorted(name for name, engine in ENGINES.items() if engine.available())
