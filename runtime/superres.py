"""Super-resolution of latent codes through every stage, with guidance (numpy only).

The torch reference and the runtime both call `super_resolve`, each passing its
own `run_stage` (a torch module or an engine), so the two walk the stages, build
the guidance branches and decode them the same way.

Per stage: the low-res codes [t, h, w] condition a masked decoding
(vp.runtime.masked_decoding) of the codes [t, 2h, 2w]. Classifier-free guidance
runs up to three branches of each step in one call, in this order: full
conditioning, no text (an all-False text mask) when cfg_text != 1, no low-res
(every low-res code = 2^bits) when cfg_lowres != 1.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

from vp.runtime.masked_decoding import guided_logits, masked_decode
from vp.runtime.vocab import Task

Grid = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class SuperResStage:
    """What decoding one stage needs of its config (vp.models.superres.SuperResConfig, or its
    JSON in a bundle's manifest)."""

    low_res_grid: Grid
    codebook_bits: int
    factors: int
    steps: int
    cfg_text: float
    cfg_lowres: float
    text_width: int

    @classmethod
    def from_config(cls, config: dict) -> SuperResStage:
        names = {f.name for f in dataclasses.fields(cls)}
        stage = {k: v for k, v in config.items() if k in names}
        return cls(**{**stage, "low_res_grid": tuple(stage["low_res_grid"])})

    @property
    def high_res_grid(self) -> Grid:
        t, h, w = self.low_res_grid
        return t, 2 * h, 2 * w

    @property
    def mask_id(self) -> int:
        """A masked high-res code, and a dropped low-res code: 2^bits."""
        return 2**self.codebook_bits


# run_stage(stage index, tokens [B, N_high] int64, low_res [B, N_low] int64,
#           text [B, L, width] float32, text_mask [B, L] bool) -> logits [B, N_high, factors, classes]
StageRunner = Callable[[int, np.ndarray, np.ndarray, np.ndarray, np.ndarray], np.ndarray]


def check_superres(stages: Sequence[SuperResStage], task: Task, grid: Grid, owner: str) -> None:
    """ValueError unless `owner` (e.g. "bundle X") has stages that take a whole clip of `grid`."""
    if not stages:
        raise ValueError(f"{owner} has no super-resolution stage")
    low = stages[0].low_res_grid
    if task in {Task.TEXT_TO_IMAGE, Task.VIDEO_TO_AUDIO} or tuple(grid) != low:
        raise ValueError(f"super-resolution works on whole clips of latent grid {low}")


def check_upscale_input(video: np.ndarray, codes: np.ndarray, stages: Sequence[SuperResStage],
                        clip: tuple[int, int, int]) -> None:
    """ValueError unless `video` [T, H, W, 3], encoded to `codes` [t, h, w], is a whole clip of
    clip = (frames, height, width): what the first stage takes."""
    if tuple(np.shape(codes)) != stages[0].low_res_grid:
        raise ValueError(f"upscale: a clip of {'x'.join(map(str, clip))} (frames x H x W) is needed, "
                         f"got {'x'.join(map(str, np.shape(video)[:3]))}")


def super_resolve(codes: np.ndarray, stages: Sequence[SuperResStage], text: tuple[np.ndarray, np.ndarray] | None,
                  rng: np.random.Generator, run_stage: StageRunner) -> np.ndarray:
    """Low-res codes [t, h, w] -> codes [t, 2^s h, 2^s w] after s stages.

    text: (embeddings [1, L, width] float32, mask [1, L] bool), or None (no text: one all-False slot).
    """
    for index, stage in enumerate(stages):
        if text is None:
            embeds, tmask = np.zeros((1, 1, stage.text_width), np.float32), np.zeros((1, 1), bool)
        else:
            embeds, tmask = text
        low = np.asarray(codes, np.int64).reshape(1, -1)
        if low.shape[1] != math.prod(stage.low_res_grid):
            raise ValueError(f"super-resolution stage {index + 1}: expected codes of grid {stage.low_res_grid}, "
                             f"got {np.shape(codes)}")
        lows, masks = [low], [tmask]
        if stage.cfg_text != 1.0:
            lows.append(low)
            masks.append(np.zeros_like(tmask))
        if stage.cfg_lowres != 1.0:
            lows.append(np.full_like(low, stage.mask_id))
            masks.append(tmask)
        low_res, text_mask = np.concatenate(lows), np.concatenate(masks)
        texts = np.repeat(embeds, len(lows), axis=0)

        def logits_fn(tokens: np.ndarray, index=index, stage=stage, low_res=low_res, texts=texts,
                      text_mask=text_mask) -> np.ndarray:
            logits = run_stage(index, np.repeat(tokens, len(low_res), axis=0), low_res, texts, text_mask)
            no_text = logits[1:2] if stage.cfg_text != 1.0 else None
            no_lowres = logits[-1:] if stage.cfg_lowres != 1.0 else None
            return guided_logits(logits[:1], no_text, no_lowres, cfg_text=stage.cfg_text, cfg_lowres=stage.cfg_lowres)

        sub = masked_decode(logits_fn, num_tokens=math.prod(stage.high_res_grid), factors=stage.factors,
                            classes=2 ** (stage.codebook_bits // stage.factors), steps=stage.steps, rng=rng)
        codes = sub.reshape(stage.high_res_grid)
    return codes
