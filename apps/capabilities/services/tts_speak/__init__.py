"""tts.speak: narration to speech, following a voice profile's pitch and rate."""
