"""Lean runtime of vp: never imports torch."""
