"""lora.train: an identity LoRA from photos of one person (GPU)."""
