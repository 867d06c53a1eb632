"""Training recipe of the demo video tokenizer's decoder alone, on the token dataset's fixed codes.

The tokenizer stage trains encoder and decoder together on 9-frame windows,
and shares the decoder with structure videos, which are only ever encoded
(the stylization prefix). This stage freezes the encoder, so every code in
the token dataset, and so everything the LLM and super-resolution stages
learn from it, stays valid, and trains the decoder alone on what it will be
asked to decode: whole 17-frame clips from their dataset codes, and (a share
of each batch) 8x8 windows of the 16x16 grids of 128x128 renders, the grids
the super-resolution stage emits, against the matching 64x64 pixel crops.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.conditioning import video_to_model
from vp.training.stage import Schedule, Stage
from vp.training.tokens import TokenRecipe
from vp.training.video_tokenizer import reconstruction_loss
from vp.training.world import World, WorldConfig


@dataclass(frozen=True, kw_only=True)
class VideoDecoderRecipe:
    steps: int = 1200
    batch: int = 4
    lr: float = 6e-4
    hires_share: float = 0.25
    l1_weight: float = 0.2
    object_weight: float = 4.0
    seed: int = 6


def batch(recipe: VideoDecoderRecipe, step: int, data: dict[str, np.ndarray], world: World,
          hires: World) -> tuple[torch.Tensor, torch.Tensor]:
    """codes [batch, t, h, w] int64 and their clips [batch, 3, T, 64, 64] float in [-1, 1]."""
    rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
    rows_hires = np.nonzero(data["hires"][:, 0, 0, 0] >= 0)[0]
    seed0 = TokenRecipe().seed * 10_000_000  # the token dataset's row i is world seed seed0 + i
    t, h, w = data["video"].shape[1:]
    codes, clips = [], []
    for _ in range(recipe.batch):
        if rng.uniform() < recipe.hires_share:
            row = int(rng.choice(rows_hires))
            clip = world.clip(seed0 + row)
            frames = hires.render(clip.attributes, seed=seed0 + row).frames
            y, x = rng.integers(0, h + 1, size=2)  # a latent window and its pixels
            scale = world.config.height // h
            codes.append(data["hires"][row, :, y:y + h, x:x + w])
            frames = frames[:, y * scale:(y + h) * scale, x * scale:(x + w) * scale]
        else:
            row = int(rng.integers(len(data["video"])))
            codes.append(data["video"][row])
            frames = world.clip(seed0 + row).frames
        clips.append(video_to_model(frames))
    return torch.from_numpy(np.stack(codes)), torch.from_numpy(np.concatenate(clips))


def losses(model: VideoTokenizer, codes: torch.Tensor, video: torch.Tensor,
           recipe: VideoDecoderRecipe) -> dict[str, torch.Tensor]:
    recon = model.decoder(model.code_bits(codes)).float()
    loss = reconstruction_loss(recon, video, recipe.object_weight, recipe.l1_weight)
    return {"loss": loss, "mse": F.mse_loss(recon.clamp(-1, 1), video)}


def train(model: VideoTokenizer, recipe: VideoDecoderRecipe, work, data: dict[str, np.ndarray],
          world_config: WorldConfig) -> VideoTokenizer:
    world = World(world_config)
    hires = World(world_config.doubled())
    model.encoder.requires_grad_(False)
    model.decoder.requires_grad_(True)
    stage = Stage("video_decoder", model, Schedule(steps=recipe.steps, lr=recipe.lr), work)
    return stage.train(lambda step: losses(model, *batch(recipe, step, data, world, hires), recipe))
