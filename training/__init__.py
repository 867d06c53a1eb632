"""The demo model's training side: the procedural world, its captions, the recipe (`vp-train`) and the evaluator."""
