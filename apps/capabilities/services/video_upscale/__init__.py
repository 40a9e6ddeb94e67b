"""video.upscale: frames to larger frames with a Real-ESRGAN-style network (GPU)."""
