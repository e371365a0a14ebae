"""Paraphrase generation: meta-prompts, strategies, and the pregen pipeline."""
