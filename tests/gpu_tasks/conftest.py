"""Tiny SD-1.5-family models built from the real classes, saved in diffusers format once
per session and loaded through the production loader; the CPU in float32."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import torch

from gpu_tasks import model_cache
from testkit import random_models

# Two cores shared with PostgreSQL, Redis and the workers: one torch thread is much
# faster than torch's default here.
torch.set_num_threads(1)
os.environ["MYSPINBOT_DEVICE"] = "cpu"


@pytest.fixture(scope="session")
def model_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("models")
    random_models.save_sd_model(root / "sd-tiny", "tiny", seed=0)
    random_models.save_motion_adapter(root / "motion-tiny", "tiny", seed=0)
    random_models.save_f5_tts(root / "f5-tiny", seed=0)
    return root


@pytest.fixture
def gpu_settings(settings: Any, model_root: Path) -> Any:
    settings.MYSPINBOT_MODEL_ROOT = model_root
    settings.MYSPINBOT_BASE_MODEL = "sd-tiny"
    settings.MYSPINBOT_MOTION_ADAPTER = "motion-tiny"
    settings.HF_HUB_OFFLINE = True
    settings.MYSPINBOT_F5_TTS_MODEL = "f5-tiny"
    settings.MYSPINBOT_F5_TTS_STEPS = 2
    return settings


@pytest.fixture
def fresh_cache() -> Iterator[model_cache.ModelCache]:
    """This process's model cache, empty, with a 1 GiB budget; emptied again afterwards."""
    model_cache._cache = model_cache.ModelCache(1 << 30)
    yield model_cache._cache
    model_cache._cache = None
