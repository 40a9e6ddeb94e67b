"""Seconds per LoRA training step: ``lora.train``'s trainer against a minimal reference loop.

Both train the same LoRA (peft ``LoraConfig`` on to_q/to_k/to_v/to_out.0 through
``unet.add_adapter``, AdamW, constant learning rate) on the same randomly initialised
SD-1.5-family model (built from its config and saved in diffusers format, loaded through
``gpu_tasks.loader``), the same photos and captions, on the same device. The reference
loop is written directly with diffusers + peft and, like most example scripts, runs the
VAE encoder and the text encoder on every step; ``lora.train`` computes latents and text
embeddings once (that one-off cost is counted in its time).

    .venv/bin/python bench/lora.py [--preset tiny|small|sd15] [--resolution 128]
                                   [--steps 20] [--photos 5] [--repeat 2] [--threads N]

Prints s/step of each side (median over ``--repeat`` alternating runs), their ratio and
the goal (ours <= 0.8x the reference).
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

REPO = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(REPO))


def configure(model_root: Path) -> None:
    from django.conf import settings

    settings.configure(
        MYSPINBOT_MODEL_ROOT=model_root, HF_HUB_OFFLINE=True, MYSPINBOT_MODEL_CACHE_BYTES=0
    )


def photos(count: int, resolution: int) -> list[Any]:
    import numpy as np
    from PIL import Image

    from gpu_tasks.lora import prepare_image_from

    rng = np.random.default_rng(0)
    return [
        prepare_image_from(
            Image.fromarray(rng.integers(0, 256, (resolution + 16, resolution, 3), np.uint8)),
            resolution,
        )
        for _ in range(count)
    ]


def ours(pipe: Any, images: list[Any], captions: list[str], config: Any, device: Any) -> float:
    """Wall seconds of lora.train's path: encode once, then the trainer's steps."""
    from gpu_tasks import lora

    sync(device)
    started = time.perf_counter()
    data = lora.encode_data(pipe, images, captions, device)
    with lora.LoraTrainer(pipe, config, device) as trainer:
        trainer.train(data)
    sync(device)
    return time.perf_counter() - started


def reference(pipe: Any, images: list[Any], captions: list[str], config: Any, device: Any) -> float:
    """Wall seconds of a minimal diffusers + peft loop that encodes on every step."""
    import torch
    import torch.nn.functional as F
    from diffusers import DDPMScheduler
    from peft import LoraConfig

    from gpu_tasks.lora import image_tensor

    unet, vae, text_encoder, tokenizer = pipe.unet, pipe.vae, pipe.text_encoder, pipe.tokenizer
    scheduler = DDPMScheduler.from_config(pipe.scheduler.config)
    unet.add_adapter(
        LoraConfig(
            r=config.rank,
            lora_alpha=config.alpha,
            init_lora_weights="gaussian",
            target_modules=["to_k", "to_q", "to_v", "to_out.0"],
        )
    )
    trainable = [p for p in unet.parameters() if p.requires_grad]
    for parameter in trainable:
        parameter.data = parameter.data.float()
    optimizer = torch.optim.AdamW(trainable, lr=config.learning_rate)
    autocast: Any = (
        torch.autocast("cuda", dtype=device.dtype)
        if device.is_cuda and device.dtype != torch.float32
        else torch.autocast("cpu", enabled=False)
    )
    generator = torch.Generator("cpu").manual_seed(config.seed)
    sync(device)
    started = time.perf_counter()
    unet.train()
    for _ in range(config.steps):
        index = int(torch.randint(0, len(images), (1,), generator=generator))
        pixels = image_tensor([images[index]]).to(device.torch_device, vae.dtype)
        with torch.no_grad():
            latents = vae.encode(pixels).latent_dist.sample() * vae.config.scaling_factor
            ids = tokenizer(
                [captions[index]],
                padding="max_length",
                max_length=tokenizer.model_max_length,
                truncation=True,
                return_tensors="pt",
            ).input_ids.to(device.torch_device)
            embeddings = text_encoder(ids)[0]
        noise = torch.randn_like(latents)
        timesteps = torch.randint(0, 1000, (1,), device=latents.device)
        noisy = scheduler.add_noise(latents, noise, timesteps)
        with autocast:
            prediction = unet(noisy, timesteps, embeddings).sample
        loss = F.mse_loss(prediction.float(), noise.float())
        loss.backward()
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
    sync(device)
    seconds = time.perf_counter() - started
    unet.eval()
    unet.unload_lora()
    unet.requires_grad_(False)
    return seconds


def sync(device: Any) -> None:
    import torch

    if device.is_cuda:
        torch.cuda.synchronize()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small", choices=["tiny", "small", "sd15"])
    parser.add_argument("--resolution", type=int, default=128)
    parser.add_argument("--steps", type=int, default=20)
    parser.add_argument("--photos", type=int, default=5)
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: default)")
    parser.add_argument("--device", default="", choices=["", "cpu", "cuda"])
    args = parser.parse_args()

    import torch

    if args.threads:
        torch.set_num_threads(args.threads)
    from gpu_tasks import loader, lora
    from gpu_tasks.device import choose_device
    from testkit import random_models

    device = choose_device(args.device or None)
    with tempfile.TemporaryDirectory(prefix="bench-lora-") as folder:
        root = Path(folder)
        configure(root)
        print(f"building a random {args.preset} SD-1.5-family model ...", flush=True)
        random_models.save_sd_model(root / "base", args.preset)
        pipe = loader.load_sd_pipeline("base", device)
        images = photos(args.photos, args.resolution)
        captions = [lora.default_caption("sks")] * len(images)
        config = lora.TrainConfig(
            rank=16, alpha=16, learning_rate=1e-4, resolution=args.resolution, steps=args.steps
        )
        warm = lora.TrainConfig(**{**config.__dict__, "steps": 2})
        ours(pipe, images, captions, warm, device)
        reference(pipe, images, captions, warm, device)
        mine: list[float] = []
        theirs: list[float] = []
        for run in range(args.repeat):
            sides = [("ours", mine, ours), ("reference", theirs, reference)]
            for name, times, function in sides if run % 2 == 0 else sides[::-1]:
                seconds = function(pipe, images, captions, config, device)
                times.append(seconds / args.steps)
                print(f"  run {run + 1} {name:<9} {seconds / args.steps:.4f} s/step", flush=True)

    ours_step, reference_step = statistics.median(mine), statistics.median(theirs)
    ratio = ours_step / reference_step
    print()
    print(
        f"LoRA training, {args.preset} model, {args.resolution} px, batch 1, rank 16, "
        f"{args.photos} photos, {args.steps} steps, {device.name} {str(device.dtype)[6:]}, "
        f"torch threads {torch.get_num_threads()}, median of {args.repeat}"
    )
    print(f"{'side':<28}{'s/step':>10}{'steps/s':>10}")
    print(f"{'lora.train (encode once)':<28}{ours_step:>10.4f}{1 / ours_step:>10.2f}")
    print(f"{'reference (encode per step)':<28}{reference_step:>10.4f}{1 / reference_step:>10.2f}")
    verdict = "PASS" if ratio <= 0.8 else "FAIL"
    print(f"goal: ours/reference <= 0.8:  {ratio:.3f}  {verdict}")
    flags = " ".join(sys.argv[1:])
    print(f"rerun: .venv/bin/python bench/lora.py {flags}".rstrip())
    return 0


if __name__ == "__main__":
    os.environ.setdefault("MYSPINBOT_DEVICE", "")
    raise SystemExit(main())
