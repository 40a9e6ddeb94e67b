"""F5-TTS: zero-shot voice cloning on a GPU worker (the engine ``tts.clone`` runs).

The model is built from F5-TTS's own classes (``f5_tts.model`` DiT and CFM, its tokenizer)
and its Vocos vocoder from Vocos's (``VocosBackbone``, ``ISTFTHead``), loaded from a folder
under the model root laid out like the published checkpoints::

    <MYSPINBOT_MODEL_ROOT>/<MYSPINBOT_F5_TTS_MODEL>/
        F5TTS_v1_Base/model_1250000.safetensors   (EMA weights, as released)
        F5TTS_v1_Base/vocab.txt
        F5TTS_v1_Base/F5TTS_v1_Base.yaml          (optional: the architecture; default:
                                                   the f5_tts package's F5TTS_v1_Base.yaml)
        vocos-mel-24khz/config.yaml
        vocos-mel-24khz/pytorch_model.bin

Speaking follows F5-TTS's ``infer_batch_process``: the reference clip (24 kHz, its RMS
raised to 0.1 when quieter) is the prompt, the text is the reference transcript followed by
the sentence, and the length of the new speech is the reference's frames per UTF-8 byte
times the sentence's bytes.

Only the model modules are imported, never ``f5_tts.model``'s package ``__init__`` (it
imports the trainer: wandb, datasets, accelerate) nor ``vocos``'s (it imports EnCodec for
a feature extractor this vocoder does not use). Both import ``torchaudio``, of which they
use only ``MelSpectrogram`` and the mel-scale conversions: where torchaudio is not
installed (its only wheels here are CUDA builds, which a CPU torch cannot load), a
stand-in with the same arithmetic (:mod:`gpu_tasks.torchaudio_mel`) takes its place.
"""

from __future__ import annotations

import importlib
import importlib.util
import sys
import types
import wave
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import yaml
from scipy.signal import resample_poly

from gpu_tasks import loader
from gpu_tasks.device import get_device
from gpu_tasks.model_cache import get_cache

NAME = "f5-tts"
MODEL_DIR, VOCODER_DIR = "F5TTS_v1_Base", "vocos-mel-24khz"
# F5-TTS's inference defaults (f5_tts/infer/utils_infer.py).
TARGET_RMS, CFG_STRENGTH, SWAY_SAMPLING = 0.1, 2.0, -1.0
# A sentence shorter than this many UTF-8 bytes is given a slower pace (as F5-TTS does).
SHORT_TEXT_BYTES, SHORT_TEXT_SPEED = 10, 0.3


def _setting(name: str) -> Any:
    from django.conf import settings

    return getattr(settings, name)


def model_folder() -> Path:
    return loader.model_root() / str(_setting("MYSPINBOT_F5_TTS_MODEL"))


def checkpoint_path(folder: Path) -> Path | None:
    """The newest ``model_*.safetensors`` (or ``.pt``) of the model folder, else None."""
    found = sorted((folder / MODEL_DIR).glob("model_*.safetensors")) or sorted(
        (folder / MODEL_DIR).glob("model_*.pt")
    )
    return found[-1] if found else None


def files_present(folder: Path) -> bool:
    return (
        checkpoint_path(folder) is not None
        and (folder / MODEL_DIR / "vocab.txt").is_file()
        and (folder / VOCODER_DIR / "config.yaml").is_file()
        and (folder / VOCODER_DIR / "pytorch_model.bin").is_file()
    )


# --- Imports of the model classes ---------------------------------------------------------


def _module_without_package_init(package: str) -> None:
    """Make ``package``'s submodules importable without running its ``__init__``."""
    if package in sys.modules:
        return
    spec = importlib.util.find_spec(package)
    if spec is None or not spec.submodule_search_locations:
        raise ImportError(f"{package} is not installed")
    module = types.ModuleType(package)
    module.__path__ = list(spec.submodule_search_locations)
    module.__spec__ = spec
    sys.modules[package] = module


def _torchaudio_or_stand_in() -> None:
    try:
        importlib.import_module("torchaudio")
    except (ImportError, OSError):
        from gpu_tasks import torchaudio_mel

        for name in [n for n in sys.modules if n == "torchaudio" or n.startswith("torchaudio.")]:
            del sys.modules[name]
        torchaudio_mel.install()


@dataclass(frozen=True)
class _Classes:
    dit: Any
    cfm: Any
    get_tokenizer: Any
    convert_char_to_pinyin: Any
    backbone: Any
    head: Any


def _classes() -> _Classes:
    _torchaudio_or_stand_in()
    _module_without_package_init("f5_tts.model")
    _module_without_package_init("vocos")
    dit = importlib.import_module("f5_tts.model.backbones.dit")
    cfm = importlib.import_module("f5_tts.model.cfm")
    utils = importlib.import_module("f5_tts.model.utils")
    models = importlib.import_module("vocos.models")
    heads = importlib.import_module("vocos.heads")
    return _Classes(
        dit.DiT,
        cfm.CFM,
        utils.get_tokenizer,
        utils.convert_char_to_pinyin,
        models.VocosBackbone,
        heads.ISTFTHead,
    )


# --- Loading ----------------------------------------------------------------------------------


class Vocoder(torch.nn.Module):
    """Vocos's mel vocoder: its backbone and ISTFT head (``Vocos.decode``)."""

    def __init__(self, backbone: torch.nn.Module, head: torch.nn.Module) -> None:
        super().__init__()
        self.backbone = backbone
        self.head = head

    def decode(self, mel: torch.Tensor) -> torch.Tensor:
        return self.head(self.backbone(mel))


@dataclass
class F5Model:
    cfm: Any
    vocoder: Vocoder
    sample_rate: int
    hop_length: int

    def modules(self) -> list[torch.nn.Module]:
        return [self.cfm, self.vocoder]


def model_config(folder: Path) -> dict[str, Any]:
    """The ``model`` section (arch, mel_spec) of the folder's yaml, else the package's."""
    own = folder / MODEL_DIR / f"{MODEL_DIR}.yaml"
    if own.is_file():
        path = own
    else:
        spec = importlib.util.find_spec("f5_tts")
        assert spec is not None
        assert spec.submodule_search_locations
        path = Path(next(iter(spec.submodule_search_locations))) / "configs" / f"{MODEL_DIR}.yaml"
    config = yaml.safe_load(path.read_text())["model"]
    if config.get("backbone", "DiT") != "DiT" or config["mel_spec"]["mel_spec_type"] != "vocos":
        raise ValueError(f"{path}: only the DiT backbone with the Vocos mel is supported")
    return dict(config)


def _vocoder(classes: _Classes, folder: Path) -> Vocoder:
    config = yaml.safe_load((folder / VOCODER_DIR / "config.yaml").read_text())
    expected = {"backbone": "vocos.models.VocosBackbone", "head": "vocos.heads.ISTFTHead"}
    for part, class_path in expected.items():
        if config[part]["class_path"] != class_path:
            raise ValueError(f"vocoder {part} {config[part]['class_path']} is not {class_path}")
    vocoder = Vocoder(
        classes.backbone(**config["backbone"]["init_args"]),
        classes.head(**config["head"]["init_args"]),
    )
    state = torch.load(folder / VOCODER_DIR / "pytorch_model.bin", map_location="cpu")
    # (the published file also holds the mel feature extractor's buffers: not needed to decode)
    wanted = {k: v for k, v in state.items() if k.startswith(("backbone.", "head."))}
    vocoder.load_state_dict(wanted)
    return vocoder.eval()


def load(folder: Path) -> F5Model:
    """The CFM model and its vocoder from ``folder`` (see the module doc), on this worker's
    device: F5-TTS's ``load_model`` and ``load_checkpoint`` with the EMA weights."""
    classes = _classes()
    config = model_config(folder)
    mel = dict(config["mel_spec"])
    vocab_char_map, vocab_size = classes.get_tokenizer(
        str(folder / MODEL_DIR / "vocab.txt"), "custom"
    )
    cfm = classes.cfm(
        transformer=classes.dit(
            **config["arch"], text_num_embeds=vocab_size, mel_dim=mel["n_mel_channels"]
        ),
        mel_spec_kwargs=mel,
        odeint_kwargs={"method": "euler"},
        vocab_char_map=vocab_char_map,
    )
    checkpoint = checkpoint_path(folder)
    if checkpoint is None:
        raise FileNotFoundError(f"no model_*.safetensors in {folder / MODEL_DIR}")
    if checkpoint.suffix == ".safetensors":
        from safetensors.torch import load_file

        weights = load_file(str(checkpoint))
    else:
        weights = torch.load(checkpoint, map_location="cpu")["ema_model_state_dict"]
    state = {
        key.removeprefix("ema_model."): value
        for key, value in weights.items()
        if key not in ("initted", "step")
        and key not in ("mel_spec.mel_stft.mel_scale.fb", "mel_spec.mel_stft.spectrogram.window")
    }
    cfm.load_state_dict(state)
    device = get_device()
    # (F5-TTS runs half precision on CUDA; the vocoder stays float32 as in its inference)
    dtype = torch.float16 if device.is_cuda else torch.float32
    return F5Model(
        cfm.to(device.torch_device, dtype).eval(),
        _vocoder(classes, folder).to(device.torch_device),
        int(mel["target_sample_rate"]),
        int(mel["hop_length"]),
    )


def _model_bytes(model: F5Model) -> int:
    return sum(
        p.numel() * p.element_size() for module in model.modules() for p in module.parameters()
    )


def read_wav(path: Path) -> tuple[np.ndarray, int]:
    """A 16-bit PCM WAV as float32 mono samples and its rate."""
    with wave.open(str(path), "rb") as clip:
        if clip.getsampwidth() != 2:
            raise ValueError(f"{path.name} is not 16-bit PCM")
        channels, rate = clip.getnchannels(), clip.getframerate()
        pcm = np.frombuffer(clip.readframes(clip.getnframes()), dtype="<i2")
    samples = pcm.astype(np.float32).reshape(-1, channels).mean(axis=1) / 32768.0
    return samples, rate


def frames_to_generate(reference_frames: int, reference_text: str, text: str) -> int:
    """Mel frames of new speech: the reference's frames per UTF-8 byte of its transcript
    times the text's bytes (F5-TTS's duration rule, its slow pace for very short text)."""
    text_bytes = len(text.encode("utf-8"))
    speed = SHORT_TEXT_SPEED if text_bytes < SHORT_TEXT_BYTES else 1.0
    reference_bytes = max(1, len(reference_text.encode("utf-8")))
    return int(reference_frames / reference_bytes * text_bytes / speed)


class F5TTSEngine:
    """The :class:`gpu_tasks.speech.CloningEngine` on F5-TTS."""

    name = NAME

    def available(self) -> bool:
        return (
            files_present(model_folder())
            and importlib.util.find_spec("f5_tts") is not None
            and importlib.util.find_spec("vocos") is not None
        )

    def model(self) -> F5Model:
        folder = model_folder()
        size = sum(f.stat().st_size for f in folder.rglob("*") if f.is_file())
        return get_cache().get(
            f"{NAME}:{folder}",
            lambda: load(folder),
            expected_bytes=size,
            size_of=_model_bytes,
        )

    def synthesize(self, text: str, reference: Path, reference_text: str) -> tuple[np.ndarray, int]:
        model = self.model()
        samples, rate = read_wav(reference)
        if rate != model.sample_rate:
            divisor = np.gcd(rate, model.sample_rate)
            samples = resample_poly(samples, model.sample_rate // divisor, rate // divisor)
        rms = float(np.sqrt(np.mean(np.square(samples)))) if samples.size else 0.0
        if 0 < rms < TARGET_RMS:
            samples = samples * (TARGET_RMS / rms)
        prompt = reference_text.strip()
        if len(prompt[-1:].encode("utf-8")) == 1:
            prompt += " "
        reference_frames = samples.size // model.hop_length
        duration = reference_frames + frames_to_generate(reference_frames, prompt, text)
        device = next(model.cfm.parameters()).device
        audio = torch.from_numpy(np.ascontiguousarray(samples, dtype=np.float32))[None].to(device)
        classes = _classes()
        with torch.inference_mode():
            mel, _ = model.cfm.sample(
                cond=audio,
                text=classes.convert_char_to_pinyin([prompt + text]),
                duration=duration,
                steps=int(_setting("MYSPINBOT_F5_TTS_STEPS")),
                cfg_strength=CFG_STRENGTH,
                sway_sampling_coef=SWAY_SAMPLING,
            )
            generated = mel.to(torch.float32)[:, reference_frames:, :].permute(0, 2, 1)
            wave_out = model.vocoder.decode(generated)
        out = wave_out.squeeze(0).float().cpu().numpy()
        if 0 < rms < TARGET_RMS:
            out = out * (rms / TARGET_RMS)
        return out.astype(np.float32), model.sample_rate
