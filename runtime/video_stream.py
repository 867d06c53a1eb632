"""Decoding a clip's codes as they arrive, each latent frame once.

The bundle's `video_decoder_step` graph is the causal video decoder one latent
frame per call, carrying each convolution's state (vp.models.video_decoder_step
explains it): the frames of all calls equal one whole-clip decode, and a stream
costs about what that decode costs instead of re-decoding the clip so far for
every latent frame (1 + 2 + ... + t latent frames: quadratic in clip length).
"""

from __future__ import annotations

import numpy as np

from vp.engines.contract import Contract
from vp.runtime.backends.base import Session
from vp.runtime.conditioning import frames_from_model


def state_shapes(contract: Contract, latent_height: int, latent_width: int) -> list[tuple[int, ...]]:
    """The shape of each `state_i` input of the step contract for one sequence of the given latent grid
    (axes: batch, latent_height / latent_width, and latent_height_x<s> = s * latent_height)."""
    sizes = {"batch": 1, "latent_height": latent_height, "latent_width": latent_width}

    def size(axis):
        if isinstance(axis, int):
            return axis
        base, _, scale = axis.rpartition("_x")
        return sizes[base] * int(scale) if scale.isdigit() else sizes[axis]

    return [tuple(size(a) for a in spec.shape) for spec in contract.inputs if spec.name.startswith("state_")]


class VideoDecodeStream:
    """push(codes [h, w] of the next latent frame) -> its frames [n, H, W, 3] uint8: 1 for the
    first latent frame, the tokenizer's temporal factor (4) for each later one."""

    def __init__(self, session: Session, latent_height: int, latent_width: int):
        self.session = session
        self.grid = (latent_height, latent_width)
        self.state = [np.zeros(s, np.float32) for s in state_shapes(session.contract, latent_height, latent_width)]
        self.first = True

    def push(self, codes: np.ndarray) -> np.ndarray:
        codes = np.asarray(codes)
        if codes.shape != self.grid or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"latent frame codes: expected {self.grid} integers, got {codes.dtype} {codes.shape}")
        feeds = {f"state_{i}": s for i, s in enumerate(self.state)}
        video, *self.state = self.session.run(codes=codes[None, None], first=np.array([self.first]), **feeds)
        frames = frames_from_model(video[0])
        if self.first:  # the step keeps fixed shapes: of the first latent frame, the last frame is real
            frames, self.first = frames[-1:], False
        return frames
