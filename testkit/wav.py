"""Float samples as the bytes of a 16-bit mono WAV file, for tests and benchmarks that
upload audio they made."""

from __future__ import annotations

import io
import wave

import numpy as np


def pcm16_wav(samples: np.ndarray, rate: int) -> bytes:
    """``samples`` (floats in -1..1, clipped) as a 16-bit mono PCM WAV."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes((np.clip(samples, -1, 1) * 32767).astype("<i2").tobytes())
    return buffer.getvalue()
