"""MuseTalk frames per second at 256²: the lip-sync backend's own loop on random weights.

Random weights at ``--preset musetalk`` (the published sizes: the v1.5 UNet, sd-vae-ft-mse,
Whisper-tiny) or ``tiny`` (a CPU dry run), saved in MuseTalk's layout and loaded through
``gpu_tasks.loader`` like downloaded weights; the portrait is scikit-image's astronaut,
its face crop and mouth box from the CPU lip-sync's face mesh, as ``lipsync.gpu`` does.

    .venv/bin/python bench/musetalk.py [--preset tiny|musetalk] [--device cpu|cuda]
                                       [--seconds 8] [--batch 16] [--threads N]

Prints the model load (cold) time, then frames/s of a warm job (Whisper features, the
crop's latents, UNet + VAE decode per frame and the paste; median of ``--repeat``) and the
peak GPU memory. Goal on an H100/H200-class GPU: >= 30 frames/s.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", choices=["tiny", "musetalk"], default="tiny")
    parser.add_argument("--device", choices=["cpu", "cuda"], default="cpu")
    parser.add_argument("--seconds", type=float, default=2.0)
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=0)
    args = parser.parse_args()
    os.environ["MYSPINBOT_DEVICE"] = args.device
    root = Path(tempfile.mkdtemp(prefix="musetalk-bench-"))

    from django.conf import settings

    settings.configure(
        MYSPINBOT_MODEL_ROOT=root, HF_HUB_OFFLINE=True, MYSPINBOT_MODEL_CACHE_BYTES=0
    )
    import numpy as np
    import torch
    from skimage import data

    from apps.capabilities.media import face as facemesh
    from apps.capabilities.media import mouth_region
    from gpu_tasks import loader, musetalk
    from gpu_tasks.device import get_device
    from testkit import random_models

    if args.threads:
        torch.set_num_threads(args.threads)
    device = get_device()
    started = time.perf_counter()
    random_models.save_musetalk(root, args.preset, seed=0)
    print(
        f"built and saved random MuseTalk ({args.preset}) in {time.perf_counter() - started:.1f} s"
    )

    def sync() -> None:
        if device.is_cuda:
            torch.cuda.synchronize()

    started = time.perf_counter()
    model = loader.load_musetalk(device)
    sync()
    took = time.perf_counter() - started
    print(f"device: {device.name}, {str(device.dtype)[6:]}; cold load {took:.2f} s")
    image = np.ascontiguousarray(data.astronaut())
    found = facemesh.find_face(image)
    crop = mouth_region.crop_box(found.landmarks, image.shape)
    mouth = mouth_region.mouth_box(found.landmarks, image.shape)
    mask = mouth_region.feathered_mask(mouth)
    rng = np.random.default_rng(0)
    samples = (0.1 * rng.standard_normal(int(args.seconds * musetalk.AUDIO_RATE))).astype(
        np.float32
    )

    def job() -> tuple[float, int]:
        sync()
        began = time.perf_counter()
        frames = musetalk.render(
            loader.load_musetalk(device),
            image,
            crop,
            mouth,
            mask,
            samples,
            25,
            lambda fraction, message: None,
            batch=args.batch,
        )
        count = sum(1 for _ in frames)
        sync()
        return time.perf_counter() - began, count

    job()  # warm-up (kernels, allocator)
    if device.is_cuda:
        torch.cuda.reset_peak_memory_stats()
    runs = [job() for _ in range(max(1, args.repeat))]
    seconds = statistics.median(t for t, _ in runs)
    frames = runs[0][1]
    peak = device.peak_bytes()
    memory = f"; peak GPU memory {peak / 2**30:.2f} GiB" if peak else ""
    print(
        f"MuseTalk: {frames / seconds:.1f} frames/s at {musetalk.CROP}x{musetalk.CROP}, "
        f"batch {args.batch}, {frames} frames in {seconds:.2f} s (median of {len(runs)}){memory}"
    )
    print("goal (H100/H200-class): >= 30 frames/s; the model stays loaded across jobs")
    del model
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
