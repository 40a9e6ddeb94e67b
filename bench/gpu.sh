#!/usr/bin/env bash
# GPU figures on an NVIDIA host, with no download: an SD-1.5-sized UNet, VAE and text
# encoder built from their published configs with random weights (the compute cost is the
# real one), saved in diffusers format and loaded through gpu_tasks.loader. Prints:
#   - LoRA training it/s at 512 px, batch 1, rank 16, in the worker's dtype (bf16 where
#     supported), and peak GPU memory while training;
#   - keyframe seconds per image at 25 steps, 512x512 (warm pipeline);
#   - cold vs warm job time (a keyframe job on an empty model cache, then the same job
#     with the pipeline cached);
#   - lora.train vs a reference diffusers + peft loop (bench/lora.py), s/step and ratio;
#   - MuseTalk frames/s at 256² (bench/musetalk.py: the published UNet/VAE/Whisper-tiny
#     sizes, random weights) and its peak memory.
# Bounded to 9.5 minutes in all. The MuseTalk step alone, on the CPU at tiny size (a dry
# run of the script's path): .venv/bin/python bench/musetalk.py --preset tiny --device cpu
#
#   bash bench/gpu.sh            # from the repository root, with .venv built (make venv)
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PY:-.venv/bin/python}
command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
export MYSPINBOT_DEVICE=cuda
WORK=$(mktemp -d /tmp/myspinbot-gpu-bench.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

timeout 330 "$PY" - "$WORK" <<'PYTHON'
import statistics, sys, time
from pathlib import Path

import torch

sys.path.insert(0, ".")
from django.conf import settings

root = Path(sys.argv[1])
settings.configure(MYSPINBOT_MODEL_ROOT=root, HF_HUB_OFFLINE=True, MYSPINBOT_MODEL_CACHE_BYTES=0)

from gpu_tasks import keyframe, loader, lora, model_cache
from testkit import random_models
from gpu_tasks.device import get_device

device = get_device()
assert device.is_cuda, "no CUDA device"
print(f"device: {device.name}, {str(device.dtype)[6:]}, {device.memory()['total_bytes'] / 2**30:.1f} GiB")
t = time.perf_counter()
random_models.save_sd_model(root / "sd15", "sd15")
print(f"built and saved the random SD-1.5-sized model in {time.perf_counter() - t:.1f} s")

request = keyframe.KeyframeRequest(prompt="photo of a person on a beach", steps=25, width=512, height=512)

def job() -> float:
    torch.cuda.synchronize(); started = time.perf_counter()
    pipe = loader.load_sd_pipeline("sd15", device)
    keyframe.render(pipe, request, device)
    torch.cuda.synchronize()
    return time.perf_counter() - started

cold = job()
warm = job()
load = model_cache.get_cache().load_seconds()
print(f"keyframe job, cold (loads the model): {cold:.2f} s; warm (cached): {warm:.2f} s; model load {list(load.values())[0]:.2f} s")
times = [job() for _ in range(3)]
print(f"keyframe: {statistics.median(times):.2f} s/image at 25 steps, 512x512 (median of 3)")

pipe = loader.load_sd_pipeline("sd15", device)
import numpy as np
from PIL import Image
rng = np.random.default_rng(0)
images = [lora.prepare_image_from(Image.fromarray(rng.integers(0, 256, (640, 512, 3), np.uint8)), 512) for _ in range(5)]
data = lora.encode_data(pipe, images, [lora.default_caption("sks")] * 5, device)
for steps, label in ((5, None), (40, "measured")):
    config = lora.TrainConfig(resolution=512, steps=steps, rank=16, alpha=16)
    torch.cuda.reset_peak_memory_stats()
    with lora.LoraTrainer(pipe, config, device) as trainer:
        result = trainer.train(data)
    if label:
        peak = device.peak_bytes() or 0
        print(f"LoRA training: {result.steps_per_second:.2f} it/s at 512 px, batch 1, rank 16, {str(device.dtype)[6:]}; peak memory {peak / 2**30:.2f} GiB")
PYTHON

timeout 140 "$PY" bench/lora.py --preset sd15 --resolution 512 --steps 15 --repeat 1 --device cuda \
  | grep -v -e "^Loading" -e "^Writing"

timeout 110 "$PY" bench/musetalk.py --preset musetalk --device cuda --seconds 8 --batch 16 \
  | grep -v -e "^Loading" -e "^Writing"
