"""Text-to-speech engines, behind one interface.

An engine turns one piece of text into float32 mono samples; the ``tts.speak`` service
does the rest (sentences, pauses, following a voice profile). Engines register in
:data:`ENGINES`; :func:`available_engines` lists those that can run on this machine (the
worker's capability report shows it).

The default engine is eSpeak NG, through ``ctypes`` on the library and data that the
``espeakng-loader`` wheel ships: no network, no model files.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import numpy as np

from apps.capabilities.media.audio import Samples, write_wav


@dataclass(frozen=True)
class Voice:
    """How to speak: the engine's voice ``name``, words per minute, and ``pitch`` on the
    engine's own 0-100 scale (50 is the voice's normal pitch)."""

    name: str = "en-us"
    rate_wpm: int = 175
    pitch: int = 50


class UnknownVoice(LookupError):
    """The engine has no voice of that name."""


class EngineUnavailable(RuntimeError):
    """The engine cannot run here (library missing or failing to start)."""


class TTSEngine(Protocol):
    name: str

    def available(self) -> bool:
        """Whether the engine can run on this machine (loads it if needed)."""
        ...

    def synthesize(self, text: str, voice: Voice) -> tuple[Samples, int]:
        """Speak ``text``; return float32 mono samples in [-1, 1] and their rate (Hz).

        Raises :class:`UnknownVoice` and :class:`EngineUnavailable`.
        """
        ...


# --- eSpeak NG -----------------------------------------------------------------------

# speak_lib.h
_AUDIO_OUTPUT_SYNCHRONOUS = 2
_INITIALIZE_DONT_EXIT = 0x8000  # return an error instead of exit() on missing data
_EE_OK = 0
_POS_CHARACTER = 1
_CHARS_UTF8 = 1
_RATE, _PITCH = 1, 3
_MIN_RATE, _MAX_RATE = 80, 450

_SynthCallback = ctypes.CFUNCTYPE(
    ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p
)


class EspeakEngine:
    """eSpeak NG in synchronous mode: ``espeak_Synth`` returns once every sample has been
    handed to our callback.

    The library keeps one global state, so every call holds a lock, and it is
    initialised once per process (lazily, so a forked worker child starts its own).
    Some of its state survives from one text to the next, so speaking the same text twice
    in a process can differ by a few samples: close, not bit-identical.
    """

    name = "espeak"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._lib: Any = None
        self._pid: int | None = None
        self._rate = 0
        self._chunks: list[Samples] = []
        self._callback = _SynthCallback(self._collect)  # kept alive while the lib has it

    def available(self) -> bool:
        try:
            with self._lock:
                self._start()
        except EngineUnavailable:
            return False
        return True

    def synthesize(self, text: str, voice: Voice) -> tuple[Samples, int]:
        with self._lock:
            lib = self._start()
            if lib.espeak_SetVoiceByName(voice.name.encode()) != _EE_OK:
                raise UnknownVoice(f"eSpeak has no voice {voice.name!r}")
            rate = min(_MAX_RATE, max(_MIN_RATE, voice.rate_wpm))
            lib.espeak_SetParameter(_RATE, rate, 0)
            lib.espeak_SetParameter(_PITCH, min(100, max(0, voice.pitch)), 0)
            self._chunks = []
            data = text.encode("utf-8") + b"\0"
            status = lib.espeak_Synth(
                data, len(data), 0, _POS_CHARACTER, 0, _CHARS_UTF8, None, None
            )
            if status != _EE_OK or lib.espeak_Synchronize() != _EE_OK:
                raise EngineUnavailable(f"espeak_Synth failed with status {status}")
            chunks, self._chunks = self._chunks, []
        samples = np.concatenate(chunks) if chunks else np.zeros(0, dtype=np.float32)
        return samples, self._rate

    def _collect(self, wav: Any, count: int, events: Any) -> int:
        if count > 0 and wav:
            pcm = np.ctypeslib.as_array(wav, shape=(count,))
            self._chunks.append((pcm.astype(np.float32) / 32768.0).astype(np.float32))
        return 0

    def _start(self) -> Any:
        if self._lib is not None and self._pid == os.getpid():
            return self._lib
        try:
            import espeakng_loader

            lib = ctypes.CDLL(espeakng_loader.get_library_path())
            data_path = espeakng_loader.get_data_path()
        except (ImportError, OSError, RuntimeError) as error:
            raise EngineUnavailable(f"eSpeak NG is not installed: {error}") from None
        lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
        lib.espeak_Initialize.restype = ctypes.c_int
        lib.espeak_SetSynthCallback.argtypes = [_SynthCallback]
        lib.espeak_SetSynthCallback.restype = None
        lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
        lib.espeak_SetVoiceByName.restype = ctypes.c_int
        lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
        lib.espeak_SetParameter.restype = ctypes.c_int
        lib.espeak_Synth.argtypes = [
            ctypes.c_void_p,
            ctypes.c_size_t,
            ctypes.c_uint,
            ctypes.c_int,
            ctypes.c_uint,
            ctypes.c_uint,
            ctypes.POINTER(ctypes.c_uint),
            ctypes.c_void_p,
        ]
        lib.espeak_Synth.restype = ctypes.c_int
        lib.espeak_Synchronize.argtypes = []
        lib.espeak_Synchronize.restype = ctypes.c_int
        rate = lib.espeak_Initialize(
            _AUDIO_OUTPUT_SYNCHRONOUS, 0, data_path.encode(), _INITIALIZE_DONT_EXIT
        )
        if rate <= 0:
            raise EngineUnavailable(f"espeak_Initialize failed ({rate}) with data {data_path}")
        lib.espeak_SetSynthCallback(self._callback)
        self._lib, self._pid, self._rate = lib, os.getpid(), rate
        return lib


# --- Registry --------------------------------------------------------------------------

ENGINES: dict[str, TTSEngine] = {engine.name: engine for engine in (EspeakEngine(),)}


def get_engine(name: str) -> TTSEngine:
    """The engine called ``name``; :class:`EngineUnavailable` if unknown or unable to run."""
    engine = ENGINES.get(name)
    if engine is None:
        raise EngineUnavailable(f"no TTS engine {name!r}; known: {sorted(ENGINES)}")
    if not engine.available():
        raise EngineUnavailable(f"TTS engine {name!r} cannot run on this machine")
    return engine


def available_engines() -> list[str]:
    """Names of the engines that can run on this machine, sorted."""
    return sorted(name for name, engine in ENGINES.items() if engine.available())


def sample_voice(text: str, path: Path, voice: Voice | None = None) -> Path:
    """Write ``text`` spoken by the default engine to ``path`` (16-bit mono WAV): a voice
    sample for demos and tests that need real speech without a recording."""
    samples, rate = get_engine("espeak").synthesize(text, voice or Voice())
    return write_wav(path, samples, rate)
