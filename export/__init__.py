"""vp.export."""
