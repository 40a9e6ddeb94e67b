"""LoRA training on the tiny model, loaded through the production loader."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from PIL import Image

from gpu_tasks import keyframe, loader, lora
from gpu_tasks.device import choose_device
from gpu_tasks.model_cache import ModelCache

pytestmark = pytest.mark.usefixtures("gpu_settings")

CPU = choose_device("cpu")
RESOLUTION = 32


def photos(count: int = 5) -> list[Image.Image]:
    generator = np.random.default_rng(7)
    images = []
    for _ in range(count):
        pixels = generator.integers(0, 256, (48, 40, 3), dtype=np.uint8)
        images.append(lora.prepare_image_from(Image.fromarray(pixels), RESOLUTION))
    return images


def encoded(pipe: Any) -> lora.TrainingData:
    images = photos()
    return lora.encode_data(pipe, images, [lora.default_caption("sks")] * len(images), CPU)


def config(**overrides: Any) -> lora.TrainConfig:
    values: dict[str, Any] = {
        "rank": 4,
        "alpha": 4,
        "learning_rate": 5e-3,
        "resolution": RESOLUTION,
        "steps": 12,
        "seed": 3,
    }
    return lora.TrainConfig(**{**values, **overrides})


def fixed_batch_loss(trainer: lora.LoraTrainer, data: lora.TrainingData) -> float:
    trainer.generator.manual_seed(1234)  # the same photos, noise and timesteps every time
    with torch.no_grad():
        return float(trainer.loss(data))


def test_training_lowers_the_loss_on_a_fixed_batch(fresh_cache: ModelCache) -> None:
    pipe = loader.load_sd_pipeline("sd-tiny", CPU)
    data = encoded(pipe)

    with lora.LoraTrainer(pipe, config(steps=30), CPU) as trainer:
        before = fixed_batch_loss(trainer, data)
        trainer.generator.manual_seed(3)
        trainer.train(data)
        after = fixed_batch_loss(trainer, data)

    assert after < 0.9 * before


def test_the_trainer_leaves_the_cached_pipeline_as_it_found_it(fresh_cache: ModelCache) -> None:
    pipe = loader.load_sd_pipeline("sd-tiny", CPU)
    names = sorted(name for name, _ in pipe.unet.named_parameters())

    with lora.LoraTrainer(pipe, config(steps=1), CPU) as trainer:
        trainer.train(encoded(pipe))
        assert any("lora_" in name for name, _ in pipe.unet.named_parameters())

    assert sorted(name for name, _ in pipe.unet.named_parameters()) == names
    assert not any(p.requires_grad for p in pipe.unet.parameters())


def test_a_saved_lora_changes_a_fresh_pipeline_and_weight_zero_restores_it(
    fresh_cache: ModelCache, tmp_path: Path
) -> None:
    pipe = loader.load_sd_pipeline("sd-tiny", CPU)
    cfg = config(learning_rate=5e-2, steps=10)
    with lora.LoraTrainer(pipe, cfg, CPU) as trainer:
        result = trainer.train(encoded(pipe))
    path = lora.save_lora(tmp_path / "lora", result.lora, cfg)
    assert path.name == "pytorch_lora_weights.safetensors"
    fresh_cache.clear()
    fresh = loader.load_sd_pipeline("sd-tiny", CPU)  # loaded again from the folder
    assert fresh is not pipe
    request = keyframe.KeyframeRequest(prompt="photo of sks person", steps=3, width=32, height=32)

    base = np.asarray(keyframe.render(fresh, request, CPU), dtype=np.int16)
    with_lora = np.asarray(
        keyframe.render(fresh, _with(request, lora=path, lora_weight=1.0), CPU), dtype=np.int16
    )
    weight_zero = np.asarray(
        keyframe.render(fresh, _with(request, lora=path, lora_weight=0.0), CPU), dtype=np.int16
    )
    again = np.asarray(keyframe.render(fresh, request, CPU), dtype=np.int16)

    assert np.abs(with_lora - base).max() > 8
    assert np.array_equal(weight_zero, base)
    assert np.array_equal(again, base)  # the adapter is gone after the render


def _with(request: keyframe.KeyframeRequest, **changes: Any) -> keyframe.KeyframeRequest:
    from dataclasses import replace

    return replace(request, **changes)


def test_a_run_resumed_from_a_checkpoint_ends_where_an_unbroken_run_does(
    fresh_cache: ModelCache,
) -> None:
    pipe = loader.load_sd_pipeline("sd-tiny", CPU)
    data = encoded(pipe)
    cfg = config(steps=6)
    saved: list[lora.Checkpoint] = []
    with lora.LoraTrainer(pipe, cfg, CPU) as trainer:
        unbroken = trainer.train(data, on_checkpoint=saved.append, checkpoint_every=4)
    assert [c.step for c in saved] == [4]
    checkpoint = lora.Checkpoint.from_bytes(saved[0].to_bytes())

    steps: list[int] = []
    with lora.LoraTrainer(pipe, cfg, CPU) as trainer:
        resumed = trainer.train(data, resume=checkpoint, on_step=lambda s, _: steps.append(s))

    assert steps == [5, 6]
    assert (resumed.resumed_from, resumed.steps) == (4, 6)
    assert resumed.losses == pytest.approx(unbroken.losses, rel=1e-5)
    assert sorted(resumed.lora) == sorted(unbroken.lora)
    for key, value in unbroken.lora.items():
        torch.testing.assert_close(resumed.lora[key], value, rtol=1e-4, atol=1e-6)


def test_a_checkpoint_of_another_configuration_is_refused(fresh_cache: ModelCache) -> None:
    pipe = loader.load_sd_pipeline("sd-tiny", CPU)
    data = encoded(pipe)
    saved: list[lora.Checkpoint] = []
    with lora.LoraTrainer(pipe, config(steps=3), CPU) as trainer:
        trainer.train(data, on_checkpoint=saved.append, checkpoint_every=2)

    with (
        lora.LoraTrainer(pipe, config(steps=3, rank=8), CPU) as trainer,
        pytest.raises(ValueError, match="another training configuration"),
    ):
        trainer.train(data, resume=saved[0])


def test_photos_are_turned_upright_and_cropped_square_near_the_top() -> None:
    tall = Image.new("RGB", (40, 100), (0, 0, 0))
    tall.paste((255, 0, 0), (0, 12, 40, 52))  # the square 12 px below the top is red
    exif = Image.Exif()
    exif[0x0112] = 6  # EXIF orientation: rotate 90° clockwise to view
    sideways = tall.transpose(Image.Transpose.ROTATE_90)
    import io

    buffer = io.BytesIO()
    sideways.save(buffer, format="JPEG", exif=exif, quality=95)

    image = lora.prepare_image(buffer.getvalue(), 20)

    assert image.size == (20, 20)
    red, green, blue = np.asarray(image, dtype=np.int16).reshape(-1, 3).mean(axis=0)
    assert red > 200
    assert green < 40
    assert blue < 40
