"""lipsync.sync: a portrait and a narration to a talking-head MP4 on the CPU."""
