"""image.keyframe: a stage prompt (and optional identity LoRA) to a PNG (GPU)."""
