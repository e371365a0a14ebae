"""Rewriter LLM backends behind one small protocol (see `base.RewriterBackend`)."""
