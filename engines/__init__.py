"""vp.engines."""
