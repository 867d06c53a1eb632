"""What a generation returns, from the runtime and from the torch reference alike."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from vp.runtime.kv_cache import KVStats
from vp.runtime.layout import SequenceLayout
from vp.runtime.token_generator import LoopTimings


@dataclass
class Sample:
    """tokens: [output_len] int64, the whole output block (forced ids included).
    frames: [T, H, W, 3] uint8 (empty [0, H, W, 3] for video-to-audio).
    audio: [N] float32 in [-1, 1] (empty when the task generates no audio)."""

    tokens: np.ndarray
    frames: np.ndarray
    audio: np.ndarray


@dataclass
class GenerationResult:
    """All samples of one request; `tokens`, `frames` and `audio` are the first sample's.
    timings: ms per stage; kv_stats and loop: the runtime's KV statistics and per-step times
    of its LLM loop (vp bench), None from the reference."""

    layout: SequenceLayout
    samples: list[Sample]
    sample_rate: int
    fps: int
    timings: dict[str, float] = field(default_factory=dict)
    kv_stats: KVStats | None = None
    loop: LoopTimings | None = None

    @property
    def tokens(self) -> np.ndarray:
        return self.samples[0].tokens

    @property
    def frames(self) -> np.ndarray:
        return self.samples[0].frames

    @property
    def audio(self) -> np.ndarray:
        return self.samples[0].audio


@dataclass
class FrameChunk:
    """Frames [n, H, W, 3] uint8 that latent frame `latent_frame` completes (1 for the first, 4 after)."""

    latent_frame: int
    frames: np.ndarray
