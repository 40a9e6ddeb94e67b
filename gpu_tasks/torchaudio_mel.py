"""What F5-TTS and Vocos take from ``torchaudio``, for a worker that has no torchaudio.

F5-TTS's model modules and Vocos's heads import torchaudio at module level but use only
``transforms.MelSpectrogram`` (the magnitude mel spectrogram of the Vocos vocoder:
power 1, centred, HTK mel scale, no filter normalisation) and
``functional.functional._hz_to_mel`` / ``_mel_to_hz``. torchaudio's wheels on the package
index are CUDA builds, which fail to load beside the CPU torch of a machine without CUDA,
so :func:`install` registers this module's arithmetic, the same as torchaudio's
(``torchaudio.functional.melscale_fbanks``, ``Spectrogram``), under that name. Where
torchaudio is installed and loads, it is used and this module is not.
"""

from __future__ import annotations

import math
import sys
import types
from typing import Any

import torch


def _hz_to_mel(freq: float, mel_scale: str = "htk") -> float:
    if mel_scale != "htk":
        raise ValueError("only the HTK mel scale is provided without torchaudio")
    return 2595.0 * math.log10(1.0 + freq / 700.0)


def _mel_to_hz(mels: torch.Tensor, mel_scale: str = "htk") -> torch.Tensor:
    if mel_scale != "htk":
        raise ValueError("only the HTK mel scale is provided without torchaudio")
    return 700.0 * (10.0 ** (mels / 2595.0) - 1.0)


def melscale_fbanks(
    n_freqs: int, f_min: float, f_max: float, n_mels: int, sample_rate: int
) -> torch.Tensor:
    """Triangular HTK mel filters (n_freqs, n_mels), unnormalised."""
    all_freqs = torch.linspace(0, sample_rate // 2, n_freqs)
    m_pts = torch.linspace(_hz_to_mel(f_min), _hz_to_mel(f_max), n_mels + 2)
    f_pts = _mel_to_hz(m_pts)
    f_diff = f_pts[1:] - f_pts[:-1]
    slopes = f_pts.unsqueeze(0) - all_freqs.unsqueeze(1)
    down = -slopes[:, :-2] / f_diff[:-1]
    up = slopes[:, 2:] / f_diff[1:]
    return torch.clamp(torch.minimum(down, up), min=0.0)


class MelSpectrogram(torch.nn.Module):
    """``torchaudio.transforms.MelSpectrogram`` for the arguments the Vocos mel uses."""

    def __init__(
        self,
        sample_rate: int = 16000,
        n_fft: int = 400,
        win_length: int | None = None,
        hop_length: int | None = None,
        n_mels: int = 128,
        power: float = 2.0,
        center: bool = True,
        normalized: bool = False,
        norm: str | None = None,
        **unsupported: Any,
    ) -> None:
        super().__init__()
        if unsupported or normalized or norm is not None:
            raise ValueError(f"unsupported MelSpectrogram arguments: {sorted(unsupported)}")
        self.n_fft = n_fft
        self.win_length = win_length or n_fft
        self.hop_length = hop_length or self.win_length // 2
        self.power = power
        self.center = center
        self.window: torch.Tensor
        self.fb: torch.Tensor
        self.register_buffer("window", torch.hann_window(self.win_length))
        self.register_buffer(
            "fb", melscale_fbanks(n_fft // 2 + 1, 0.0, float(sample_rate // 2), n_mels, sample_rate)
        )

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        shape = waveform.shape
        flat = waveform.reshape(-1, shape[-1])
        spectrum = torch.stft(
            flat,
            n_fft=self.n_fft,
            hop_length=self.hop_length,
            win_length=self.win_length,
            window=self.window,
            center=self.center,
            pad_mode="reflect",
            normalized=False,
            onesided=True,
            return_complex=True,
        ).abs()
        if self.power != 1.0:
            spectrum = spectrum.pow(self.power)
        mel = torch.matmul(spectrum.transpose(-1, -2), self.fb).transpose(-1, -2)
        return mel.reshape(*shape[:-1], *mel.shape[-2:])


def install() -> None:
    """Register this module as ``torchaudio`` (with ``transforms`` and
    ``functional.functional``)."""
    root = types.ModuleType("torchaudio")
    transforms = types.ModuleType("torchaudio.transforms")
    functional = types.ModuleType("torchaudio.functional")
    inner = types.ModuleType("torchaudio.functional.functional")
    transforms.MelSpectrogram = MelSpectrogram  # type: ignore[attr-defined]
    inner._hz_to_mel = _hz_to_mel  # type: ignore[attr-defined]
    inner._mel_to_hz = _mel_to_hz  # type: ignore[attr-defined]
    inner.melscale_fbanks = melscale_fbanks  # type: ignore[attr-defined]
    functional.functional = inner  # type: ignore[attr-defined]
    functional.melscale_fbanks = melscale_fbanks  # type: ignore[attr-defined]
    root.transforms = transforms  # type: ignore[attr-defined]
    root.functional = functional  # type: ignore[attr-defined]
    root.__path__ = []
    sys.modules.update(
        {
            "torchaudio": root,
            "torchaudio.transforms": transforms,
            "torchaudio.functional": functional,
            "torchaudio.functional.functional": inner,
        }
    )
