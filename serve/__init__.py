"""vp serve: a bundle behind an HTTP service on Ray Serve (the `serve` extra). The core runtime never imports this."""
