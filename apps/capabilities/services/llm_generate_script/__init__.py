"""llm.generate_script: a short video's title, stage prompt and narration from a topic."""
