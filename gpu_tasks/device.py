"""The device and dtype a GPU worker computes on, chosen once per process.

CUDA when there is a GPU: bfloat16 where the GPU supports it, else float16, TF32 matmuls on
Ampere and newer; otherwise the CPU in float32. Attention uses PyTorch's scaled dot
product attention (diffusers' default processor on torch 2). ``MYSPINBOT_DEVICE=cpu``
forces the CPU (tests, and hosts whose GPU is reserved for something else).
"""

from __future__ import annotations

import functools
import os
from dataclasses import dataclass
from typing import Any

import psutil
import torch


@dataclass(frozen=True)
class Device:
    """Where tensors live and the dtype the models run in."""

    torch_device: torch.device
    dtype: torch.dtype
    name: str

    @property
    def type(self) -> str:
        return self.torch_device.type

    @property
    def is_cuda(self) -> bool:
        return self.torch_device.type == "cuda"

    def memory(self) -> dict[str, int]:
        """Total and free bytes of the device's memory (system memory on the CPU)."""
        if self.is_cuda:
            free, total = torch.cuda.mem_get_info(self.torch_device)
            return {"total_bytes": int(total), "free_bytes": int(free)}
        memory = psutil.virtual_memory()
        return {"total_bytes": int(memory.total), "free_bytes": int(memory.available)}

    def peak_bytes(self) -> int | None:
        """Peak allocated bytes since the last reset (CUDA only)."""
        return int(torch.cuda.max_memory_allocated(self.torch_device)) if self.is_cuda else None

    def to_json(self) -> dict[str, Any]:
        return {
            "type": self.type,
            "name": self.name,
            "dtype": str(self.dtype).removeprefix("torch."),
            "count": torch.cuda.device_count() if self.is_cuda else os.cpu_count(),
            **self.memory(),
        }


def choose_device(forced: str | None = None) -> Device:
    """Pick the device: see the module doc. ``forced`` is ``"cpu"``, ``"cuda"`` or None."""
    wanted = (forced or os.environ.get("MYSPINBOT_DEVICE", "")).strip().lower()
    if wanted not in ("", "cpu", "cuda"):
        raise ValueError(f"MYSPINBOT_DEVICE must be cpu or cuda, not {wanted!r}")
    if wanted != "cpu" and torch.cuda.is_available():
        index = torch.cuda.current_device()
        major, _ = torch.cuda.get_device_capability(index)
        if major >= 8:  # Ampere and newer: TF32 tensor cores for the fp32 parts
            torch.backends.cuda.matmul.allow_tf32 = True
            torch.backends.cudnn.allow_tf32 = True
        dtype = torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
        return Device(torch.device("cuda", index), dtype, torch.cuda.get_device_name(index))
    if wanted == "cuda":
        raise RuntimeError("MYSPINBOT_DEVICE=cuda but no CUDA device is available")
    return Device(torch.device("cpu"), torch.float32, "cpu")


@functools.cache
def get_device() -> Device:
    """This process's device, chosen on first use."""
    return choose_device()


def is_out_of_memory(error: BaseException) -> bool:
    """Whether ``error`` is the device running out of memory."""
    if isinstance(error, torch.cuda.OutOfMemoryError):
        return True
    return isinstance(error, RuntimeError) and "out of memory" in str(error).lower()


def release_memory() -> None:
    """Give cached device memory back after models were dropped."""
    import gc

    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
