"""Stable Diffusion 1.5-family models with random weights, built from their configs.

``tiny`` builds the real diffusers/transformers classes at a few thousand parameters per
block, so tests run the production code on them; ``small`` keeps SD-1.5's shape at a
quarter of its widths for CPU benchmarks; ``sd15`` uses the
published SD-1.5 sizes (UNet 860 M, VAE 84 M, CLIP ViT-L/14 text encoder 123 M), so a
GPU benchmark pays the real compute cost without downloading weights. Either is saved in
diffusers format and loaded back through :mod:`gpu_tasks.loader`, like a downloaded model.

The tokenizer is built in memory: one BPE token per printable ASCII character (with and
without the end-of-word mark) and no merges, which tokenizes any ASCII prompt.
"""

from __future__ import annotations

import string
from pathlib import Path
from typing import Any

import torch

PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "unet": {
            "sample_size": 16,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 1,
            "block_out_channels": (32, 64),
            "down_block_types": ("CrossAttnDownBlock2D", "DownBlock2D"),
            "up_block_types": ("UpBlock2D", "CrossAttnUpBlock2D"),
            "cross_attention_dim": 32,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": (32, 64),
            "down_block_types": ("DownEncoderBlock2D", "DownEncoderBlock2D"),
            "up_block_types": ("UpDecoderBlock2D", "UpDecoderBlock2D"),
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 32,
            "sample_size": 32,
        },
        "text": {
            "hidden_size": 32,
            "intermediate_size": 37,
            "num_hidden_layers": 2,
            "num_attention_heads": 4,
            "max_position_embeddings": 77,
            "projection_dim": 32,
        },
        "motion": {
            "block_out_channels": (32, 64),
            "motion_layers_per_block": 1,
            "motion_norm_num_groups": 32,
            "motion_num_attention_heads": 2,
            "motion_max_seq_length": 32,
            "use_motion_mid_block": False,
        },
    },
    # SD-1.5's shape (four UNet levels, two layers each, a four-level VAE) at a quarter of
    # its widths: a CPU benchmark whose parts weigh roughly what they do in the real model.
    "small": {
        "unet": {
            "sample_size": 32,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (64, 128, 256, 256),
            "down_block_types": (
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            "up_block_types": (
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ),
            "cross_attention_dim": 192,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": (32, 64, 128, 128),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": 256,
        },
        "text": {
            "hidden_size": 192,
            "intermediate_size": 768,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "projection_dim": 192,
            "hidden_act": "quick_gelu",
        },
        "motion": {
            "block_out_channels": (64, 128, 256, 256),
            "motion_layers_per_block": 2,
            "motion_norm_num_groups": 32,
            "motion_num_attention_heads": 8,
            "motion_max_seq_length": 32,
            "use_motion_mid_block": False,
        },
    },
    "sd15": {
        "unet": {
            "sample_size": 64,
            "in_channels": 4,
            "out_channels": 4,
            "layers_per_block": 2,
            "block_out_channels": (320, 640, 1280, 1280),
            "down_block_types": (
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "CrossAttnDownBlock2D",
                "DownBlock2D",
            ),
            "up_block_types": (
                "UpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
                "CrossAttnUpBlock2D",
            ),
            "cross_attention_dim": 768,
            "attention_head_dim": 8,
            "norm_num_groups": 32,
        },
        "vae": {
            "in_channels": 3,
            "out_channels": 3,
            "block_out_channels": (128, 256, 512, 512),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "latent_channels": 4,
            "layers_per_block": 2,
            "norm_num_groups": 32,
            "sample_size": 512,
        },
        "text": {
            "hidden_size": 768,
            "intermediate_size": 3072,
            "num_hidden_layers": 12,
            "num_attention_heads": 12,
            "max_position_embeddings": 77,
            "projection_dim": 768,
            "hidden_act": "quick_gelu",
        },
        "motion": {
            "block_out_channels": (320, 640, 1280, 1280),
            "motion_layers_per_block": 2,
            "motion_norm_num_groups": 32,
            "motion_num_attention_heads": 8,
            "motion_max_seq_length": 32,
            "use_motion_mid_block": False,
        },
    },
}

BOS, EOS = "<|startoftext|>", "<|endoftext|>"


def build_tokenizer() -> Any:
    """A CLIP tokenizer over printable ASCII characters, built in memory."""
    from transformers import CLIPTokenizer

    chars = [c for c in string.printable if not c.isspace()]
    tokens = [*chars, *(c + "</w>" for c in chars), BOS, EOS]
    vocab = {token: index for index, token in enumerate(tokens)}
    return CLIPTokenizer(
        vocab=vocab,
        merges=[],
        unk_token=EOS,
        bos_token=BOS,
        eos_token=EOS,
        pad_token=EOS,
        model_max_length=77,
    )


def build_sd_pipeline(preset: str = "tiny", seed: int = 0) -> Any:
    """A ``StableDiffusionPipeline`` with random weights at the ``preset`` sizes."""
    from diffusers import (
        AutoencoderKL,
        DDIMScheduler,
        StableDiffusionPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    sizes = PRESETS[preset]
    tokenizer = build_tokenizer()
    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel(**sizes["unet"])
    torch.manual_seed(seed + 1)
    vae = AutoencoderKL(**sizes["vae"])
    torch.manual_seed(seed + 2)
    text_config = CLIPTextConfig(
        vocab_size=max(len(tokenizer), 49408 if preset == "sd15" else 0),
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.pad_token_id,
        **sizes["text"],
    )
    text_encoder = CLIPTextModel(text_config)
    scheduler = DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
        num_train_timesteps=1000,
    )
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=text_encoder,
        tokenizer=tokenizer,
        unet=unet,
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def build_motion_adapter(preset: str = "tiny", seed: int = 0) -> Any:
    from diffusers import MotionAdapter

    torch.manual_seed(seed + 3)
    return MotionAdapter(**PRESETS[preset]["motion"])


def save_sd_model(folder: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Build and save a random SD pipeline in diffusers format at ``folder``."""
    build_sd_pipeline(preset, seed).save_pretrained(folder, safe_serialization=True)
    return folder


def save_motion_adapter(folder: Path, preset: str = "tiny", seed: int = 0) -> Path:
    build_motion_adapter(preset, seed).save_pretrained(folder, safe_serialization=True)
    return folder


# MuseTalk v1.5: its UNet (8 channels in: masked ‖ reference latents; cross-attention to
# Whisper-tiny's 384-wide states), the SD VAE and Whisper-tiny. ``tiny`` keeps the layout
# and the 256² crop with a few thousand parameters per block; ``musetalk`` is the
# published sizes (UNet 850 M as in musetalk.json, sd-vae-ft-mse, whisper-tiny).
MUSETALK_PRESETS: dict[str, dict[str, Any]] = {
    "tiny": {
        "unet": {**PRESETS["tiny"]["unet"], "in_channels": 8, "sample_size": 32},
        "vae": {
            "block_out_channels": (8, 8, 16, 16),
            "down_block_types": ("DownEncoderBlock2D",) * 4,
            "up_block_types": ("UpDecoderBlock2D",) * 4,
            "latent_channels": 4,
            "layers_per_block": 1,
            "norm_num_groups": 8,
            "sample_size": 256,
        },
        "whisper": {
            "d_model": 32,
            "encoder_layers": 2,
            "encoder_attention_heads": 2,
            "encoder_ffn_dim": 64,
            "decoder_layers": 1,
            "decoder_attention_heads": 2,
            "decoder_ffn_dim": 64,
            "max_target_positions": 32,
        },
    },
    "musetalk": {
        "unet": {
            **PRESETS["sd15"]["unet"],
            "in_channels": 8,
            "cross_attention_dim": 384,
            "flip_sin_to_cos": True,
            "freq_shift": 0,
        },
        "vae": {**PRESETS["sd15"]["vae"], "sample_size": 256},
        "whisper": {
            "d_model": 384,
            "encoder_layers": 4,
            "encoder_attention_heads": 6,
            "encoder_ffn_dim": 1536,
            "decoder_layers": 4,
            "decoder_attention_heads": 6,
            "decoder_ffn_dim": 1536,
            "max_target_positions": 448,
        },
    },
}


def save_musetalk(root: Path, preset: str = "tiny", seed: int = 0) -> Path:
    """Random MuseTalk weights in its published layout at ``root``/musetalk (what
    :func:`gpu_tasks.musetalk.weights_present` looks for); returns that folder."""
    import json

    from diffusers import AutoencoderKL, UNet2DConditionModel
    from transformers import WhisperConfig, WhisperFeatureExtractor, WhisperModel

    sizes = MUSETALK_PRESETS[preset]
    folder = root / "musetalk"
    (folder / "musetalkV15").mkdir(parents=True, exist_ok=True)
    torch.manual_seed(seed)
    unet: Any = UNet2DConditionModel(**sizes["unet"])
    (folder / "musetalkV15" / "musetalk.json").write_text(json.dumps(sizes["unet"], indent=1))
    torch.save(unet.state_dict(), folder / "musetalkV15" / "unet.pth")
    torch.manual_seed(seed + 1)
    vae_sizes = {"in_channels": 3, "out_channels": 3, **sizes["vae"]}
    vae: Any = AutoencoderKL(**vae_sizes)
    vae.save_pretrained(folder / "sd-vae", safe_serialization=True)
    torch.manual_seed(seed + 2)
    config = WhisperConfig(num_mel_bins=80, max_source_positions=1500, **sizes["whisper"])
    whisper = WhisperModel(config)
    whisper.save_pretrained(folder / "whisper", safe_serialization=True)
    WhisperFeatureExtractor(feature_size=80).save_pretrained(folder / "whisper")
    return folder


# --- F5-TTS (gpu_tasks.cloning) ----------------------------------------------------------

# F5TTS_v1_Base's architecture at a few thousand parameters per block; the mel and the
# vocoder keep the published 24 kHz / 100 mels / hop 256 shape, so lengths are the real ones.
F5_TINY_ARCH = {
    "dim": 32,
    "depth": 2,
    "heads": 2,
    "ff_mult": 2,
    "text_dim": 16,
    "text_mask_padding": True,
    "qk_norm": None,
    "conv_layers": 1,
    "pe_attn_head": None,
    "attn_backend": "torch",
    "attn_mask_enabled": False,
    "checkpoint_activations": False,
}
F5_MEL = {
    "target_sample_rate": 24000,
    "n_mel_channels": 100,
    "hop_length": 256,
    "win_length": 1024,
    "n_fft": 1024,
    "mel_spec_type": "vocos",
}
VOCOS_TINY: dict[str, dict[str, Any]] = {
    "feature_extractor": {
        "class_path": "vocos.feature_extractors.MelSpectrogramFeatures",
        "init_args": {
            "sample_rate": 24000,
            "n_fft": 1024,
            "hop_length": 256,
            "n_mels": 100,
            "padding": "center",
        },
    },
    "backbone": {
        "class_path": "vocos.models.VocosBackbone",
        "init_args": {"input_channels": 100, "dim": 32, "intermediate_dim": 64, "num_layers": 1},
    },
    "head": {
        "class_path": "vocos.heads.ISTFTHead",
        "init_args": {"dim": 32, "n_fft": 1024, "hop_length": 256, "padding": "same"},
    },
}


def save_f5_tts(folder: Path, seed: int = 0) -> Path:
    """A random-weight F5-TTS (DiT + CFM) and Vocos vocoder from their real classes, saved
    in the published layout (``gpu_tasks.cloning``): EMA-prefixed safetensors, F5-TTS's own
    vocab.txt, the architecture yaml, Vocos's config.yaml and pytorch_model.bin."""
    import importlib.util
    import shutil

    import yaml
    from safetensors.torch import save_file

    from gpu_tasks import cloning

    torch.manual_seed(seed)
    classes = cloning._classes()
    model_dir, vocoder_dir = folder / cloning.MODEL_DIR, folder / cloning.VOCODER_DIR
    model_dir.mkdir(parents=True, exist_ok=True)
    vocoder_dir.mkdir(parents=True, exist_ok=True)
    spec = importlib.util.find_spec("f5_tts")
    assert spec is not None
    assert spec.submodule_search_locations
    package = Path(next(iter(spec.submodule_search_locations)))
    shutil.copyfile(package / "infer" / "examples" / "vocab.txt", model_dir / "vocab.txt")
    vocab, vocab_size = classes.get_tokenizer(str(model_dir / "vocab.txt"), "custom")
    config = {
        "name": cloning.MODEL_DIR,
        "backbone": "DiT",
        "arch": F5_TINY_ARCH,
        "mel_spec": F5_MEL,
    }
    (model_dir / f"{cloning.MODEL_DIR}.yaml").write_text(yaml.safe_dump({"model": config}))
    cfm = classes.cfm(
        transformer=classes.dit(
            **F5_TINY_ARCH, text_num_embeds=vocab_size, mel_dim=F5_MEL["n_mel_channels"]
        ),
        mel_spec_kwargs=F5_MEL,
        vocab_char_map=vocab,
    )
    weights = {f"ema_model.{k}": v.contiguous() for k, v in cfm.state_dict().items()}
    save_file(weights, str(model_dir / "model_1250000.safetensors"))
    (vocoder_dir / "config.yaml").write_text(yaml.safe_dump(VOCOS_TINY))
    vocoder = cloning.Vocoder(
        classes.backbone(**VOCOS_TINY["backbone"]["init_args"]),
        classes.head(**VOCOS_TINY["head"]["init_args"]),
    )
    state = dict(vocoder.state_dict())
    state["feature_extractor.mel_spec.spectrogram.window"] = torch.hann_window(1024)
    torch.save(state, vocoder_dir / "pytorch_model.bin")
    return folder
