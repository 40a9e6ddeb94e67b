"""voice.build_profile: a reusable voice profile from a voice sample and its transcript."""
