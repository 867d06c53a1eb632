"""Calibration data: teacher-forced sequences in the pipeline's own task layouts.

The source is the procedural world (vp.training.world) rendered at the
preset's geometry and encoded by the preset's own tokenizers, captioned and
laid out by the same SequenceBuilder the runtime uses, with the text encoder's
projected embeddings in the text slots: prefix positions (prefill) and output
positions (decode) of every task the world can pose. Two disjoint splits: the
calibration split (world seeds from 5 x 10^8) that the statistics are taken
on, and the held-out split (world seeds from 1.01 x 10^9, inside the
evaluator's held-out range) that the accuracy gate measures.
"""

from __future__ import annotations

import hashlib
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vp.models.checkpoint import Models
from vp.runtime.vocab import Task

# the world's tasks that need no second rendering (long video, in/outpainting are left out)
TASKS = (Task.TEXT_TO_VIDEO, Task.IMAGE_TO_VIDEO, Task.VIDEO_TO_AUDIO, Task.STYLIZATION, Task.TEXT_TO_IMAGE,
         Task.AUDIO_TO_VIDEO, Task.CONTINUATION, Task.AUDIO_VIDEO_CONTINUATION, Task.UNCONDITIONAL)
SOURCES = ("world",)


@dataclass(frozen=True, kw_only=True)
class CalibrationConfig:
    """How many sequences each split has; the token seeds (x 10^7 = the first world seed) of each."""

    sequences: int = 32
    held_out: int = 16
    seed: int = 50
    held_out_seed: int = 101

    MIN_SEQUENCES = 8
    MIN_HELD_OUT = 4

    def check(self) -> None:
        if self.sequences < self.MIN_SEQUENCES or self.held_out < self.MIN_HELD_OUT:
            raise ValueError(f"a calibration set of {self.sequences} sequences with {self.held_out} held out is too "
                             f"small: INT8 needs at least {self.MIN_SEQUENCES} calibration and {self.MIN_HELD_OUT} "
                             f"held-out sequences (--calibration-sequences, --held-out-sequences)")


@dataclass(frozen=True)
class Sequence:
    """One teacher-forced sequence: ids [S] int64; embeds [S, D] float32 read where embed_mask [S]
    is True; positions j with high[j] > 0 were sampled from ids [low[j], high[j])."""

    task: str
    ids: np.ndarray
    prefix_len: int
    embeds: np.ndarray
    embed_mask: np.ndarray
    low: np.ndarray
    high: np.ndarray


@dataclass(frozen=True)
class CalibrationSet:
    calibration: list[Sequence]
    held_out: list[Sequence]

    def fingerprint(self) -> str:
        """sha256 of both splits' ids, prefix lengths and embeddings: a rebuild from the same data
        has the same fingerprint."""
        digest = hashlib.sha256()
        for s in (*self.calibration, *self.held_out):
            digest.update(s.task.encode())
            digest.update(np.int64(s.prefix_len).tobytes())
            digest.update(s.ids.tobytes())
            digest.update(np.round(s.embeds[s.embed_mask], 4).astype(np.float32).tobytes())
        return digest.hexdigest()

    def describe(self) -> dict:
        return {"source": "world", "sequences": len(self.calibration), "held_out": len(self.held_out),
                "tasks": sorted({s.task for s in self.calibration}), "fingerprint": self.fingerprint()}


def calibration_set(models: Models, config: CalibrationConfig) -> CalibrationSet:
    """Both splits for `models` (ValueError when the preset has no calibration source or the
    config is too small)."""
    preset = models.preset
    if preset.calibration not in SOURCES:
        raise ValueError(f"preset {preset.name} has no calibration data source: INT8 is calibrated on the procedural "
                         f"world through the preset's own tokenizers, which presets "
                         f"{', '.join(_sourced())} have; export {preset.name} at --precision fp16 or fp32")
    config.check()
    return CalibrationSet(_split(models, config.sequences, config.seed),
                          _split(models, config.held_out, config.held_out_seed))


def _sourced() -> list[str]:
    from vp.models.presets import PRESETS

    return [name for name, p in PRESETS.items() if p.calibration in SOURCES]


@torch.no_grad()
def _split(models: Models, n: int, seed: int) -> list[Sequence]:
    from vp.runtime.layout import SequenceBuilder
    from vp.training import tokens
    from vp.training.llm import TextCache, make_example
    from vp.training.recipe import world_config
    from vp.training.world import World

    preset = models.preset
    world = World(world_config(preset))
    with tempfile.TemporaryDirectory() as scratch:
        path = Path(scratch) / "tokens.npz"
        # sparse_every > n: only row 0 gets the extra renderings the left-out tasks would need
        tokens.build(models.video_tokenizer, models.audio_tokenizer, world,
                     tokens.TokenRecipe(clips=n, sparse_every=n + 1, seed=seed), path)
        data = tokens.load(path)
    builder = SequenceBuilder(preset.vocab, preset.geometry)
    text = TextCache(models.text_encoder)
    projection = models.text_encoder.projection
    out = []
    for i in range(n):
        task = TASKS[i % len(TASKS)]
        rng = np.random.Generator(np.random.PCG64([seed, i]))
        e = make_example(task, i, data, builder, rng, 0.0, lambda caption: len(text(caption)))
        embeds = np.zeros((len(e.ids), preset.llm.d_model), np.float32)
        embed_mask = np.zeros(len(e.ids), bool)
        if e.caption is not None:
            lay = e.layout
            embeds[lay.text_start:lay.text_start + lay.text_len] = projection(text(e.caption).float()).numpy()
            embed_mask[lay.text_start:lay.text_start + lay.text_len] = True
        out.append(Sequence(task.value, e.ids, e.layout.prefix_len, embeds, embed_mask, e.low, e.high))
    return out
