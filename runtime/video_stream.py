"""Decoding a clip's codes as they arrive, each latent frame once.

The bundle's `video_decoder_first` and `video_decoder_step` graphs are the
causal video decoder one latent frame per call, carrying each convolution's
state (vp.models.video_decoder_step explains it): the first graph decodes the
clip's first latent frame into its one frame, the step graph every later one
into four, and the frames of all calls equal one whole-clip decode. A stream
costs about what that decode costs instead of re-decoding the clip so far for
every latent frame (1 + 2 + ... + t latent frames: quadratic in clip length).
"""

from __future__ import annotations

import numpy as np

from vp.runtime.backends.base import Session
from vp.runtime.conditioning import frames_from_model


class VideoDecodeStream:
    """push(codes [h, w] of the next latent frame) -> its frames [n, H, W, 3] uint8: 1 for the
    first latent frame (the `first` session), the tokenizer's temporal factor (4) for each later
    one (the `step` session)."""

    def __init__(self, first: Session, step: Session, latent_height: int, latent_width: int):
        self.first, self.step = first, step
        self.grid = (latent_height, latent_width)
        self.state: list[np.ndarray] | None = None  # the first call returns it

    def push(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.shape != self.grid or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"latent frame codes: expected {self.grid} integers, got {codes.dtype} {codes.shape}")
        if self.state is None:
            video, *self.state = self.first.run(codes=codes[None, None])
        else:
            feeds = {f"state_{i}": s for i, s in enumerate(self.state)}
            video, *self.state = self.step.run(codes=codes[None, None], **feeds)
        return frames_from_model(video[0])
