"""GPU speech engines: text + a voice profile's reference clip → a WAV in that voice.

One interface, :class:`CloningEngine`; an engine (F5-TTS, XTTS...) registers itself in
:data:`ENGINES` only when its weights are configured. None ships with this build; the
worker reports the (empty) list, and the CPU engines of ``tts.speak`` remain the ones used.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np


class CloningEngine(Protocol):
    name: str

    def available(self) -> bool:
        """Whether its weights are configured and loadable on this worker."""
        ...

    def synthesize(self, text: str, reference: Path, reference_text: str) -> tuple[np.ndarray, int]:
        """Speak ``text`` in the voice of ``reference``; float32 mono samples and rate."""
        ...


ENGINES: dict[str, CloningEngine] = {}


def available_engines() -> list[str]:
    return sorted(name for name, engine in ENGINES.items() if engine.available())
