"""lipsync.sync: a face and a narration to a lip-synced MP4 (GPU backends)."""
