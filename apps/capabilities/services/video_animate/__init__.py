"""video.animate: a keyframe to a short clip of frames (GPU)."""
