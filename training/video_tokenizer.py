"""Training recipe of the demo video tokenizer (MAGVIT-v2 style, LFQ).

Batches: first single frames (cheap: the codes of colour and shape are
learned on images, which are also every clip's first latent frame), then
9-frame windows (one frame alone, then two 4-frame latent groups) cut at a
random frame of demo clips, so that every frame learns to be a first frame
and a later one. A share of each batch is 64x64 crops of the same world
rendered at 128x128 (the super-resolution stage decodes 16x16 latent grids
with this tokenizer), and a share structure videos (the stylization prefix).

Loss: MSE + L1 reconstruction, with the object's pixels weighted 5x; LFQ with a straight-through sign, a commitment
term pulling each latent towards +-1, and a bit-usage term (the batch's mean
of each bit kept near one half).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.conditioning import frames_from_model, video_to_model
from vp.training.measure import psnr
from vp.training.stage import Schedule, Stage
from vp.training.world import HELD_OUT_SEED, World, WorldConfig


@dataclass(frozen=True, kw_only=True)
class VideoTokenizerRecipe:
    steps: int = 3000
    image_steps: int = 500  # the first steps train on single frames
    image_batch: int = 24
    batch: int = 6
    window: int = 9  # frames per training window (1 + 4k)
    lr: float = 2e-3
    hires_share: float = 0.2
    structure_share: float = 0.15
    l1_weight: float = 0.2
    object_weight: float = 4.0  # extra weight of the pixels that differ from the background
    commit_weight: float = 0.1
    usage_weight: float = 0.05
    seed: int = 1


def batch(recipe: VideoTokenizerRecipe, step: int, world: World, hires: World) -> torch.Tensor:
    """Training windows of step `step`: [batch, 3, window, 64, 64] float in [-1, 1]
    ([image_batch, 3, 1, 64, 64] during the first image_steps)."""
    rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
    images = step < recipe.image_steps
    size, window = (recipe.image_batch, 1) if images else (recipe.batch, recipe.window)
    clips = []
    for i in range(size):
        seed = (recipe.seed * 10_000_000 + step * recipe.image_batch + i) % HELD_OUT_SEED
        kind = rng.uniform()
        if kind < recipe.hires_share:
            frames = hires.clip(seed).frames
            y, x = rng.integers(0, 65, size=2)
            frames = frames[:, y:y + 64, x:x + 64]
        elif kind < recipe.hires_share + recipe.structure_share:
            frames = world.clip(seed).structure
        else:
            frames = world.clip(seed).frames
        start = rng.integers(0, len(frames) - window + 1)
        clips.append(video_to_model(frames[start:start + window]))
    return torch.from_numpy(np.concatenate(clips))


def losses(model: VideoTokenizer, video: torch.Tensor, recipe: VideoTokenizerRecipe) -> dict[str, torch.Tensor]:
    z = model.encoder(video).float()  # (B, bits, t, h, w)
    q = torch.where(z > 0, 1.0, -1.0)
    recon = model.decoder(z + (q - z).detach()).float()  # straight-through sign
    commit = F.mse_loss(z, q)
    # every bit used across the batch (MAGVIT-v2's codebook-entropy term, per bit); its other term,
    # confident bits per position, saturated the encoder here and froze the codes
    usage = _binary_entropy(torch.sigmoid(z).mean(dim=(0, 2, 3, 4))).mean()
    reconstruction = reconstruction_loss(recon, video, recipe.object_weight, recipe.l1_weight)
    loss = reconstruction + recipe.commit_weight * commit - recipe.usage_weight * usage
    return {"loss": loss, "mse": F.mse_loss(recon, video), "commit": commit, "usage": usage}


def reconstruction_loss(recon: torch.Tensor, video: torch.Tensor, object_weight: float,
                        l1_weight: float) -> torch.Tensor:
    """Weighted MSE + l1_weight * weighted L1 of recon against video (both [B, 3, T, H, W]), the
    pixels that differ from the background (each frame's top-left pixel) weighted 1 + object_weight."""
    # the object covers ~3% of a frame: without extra weight its colour is the last thing learned
    background = video[..., :1, :1]
    weight = 1 + object_weight * ((video - background).abs().sum(1, keepdim=True) > 0.1).float()
    error = recon - video
    return (weight * error**2).mean() + l1_weight * (weight * error.abs()).mean()


def _binary_entropy(p: torch.Tensor) -> torch.Tensor:
    p = p.clamp(1e-6, 1 - 1e-6)
    return -(p * p.log() + (1 - p) * (1 - p).log())


def train(model: VideoTokenizer, recipe: VideoTokenizerRecipe, work, world_config: WorldConfig) -> VideoTokenizer:
    world = World(world_config)
    hires = World(world_config.doubled())
    stage = Stage("video_tokenizer", model, Schedule(steps=recipe.steps, lr=recipe.lr), work)
    return stage.train(lambda step: losses(model, batch(recipe, step, world, hires), recipe))


@torch.no_grad()
def held_out_psnr(model: VideoTokenizer, world: World, clips: int = 32, structure: bool = False) -> list[float]:
    """PSNR (dB) of whole held-out clips (17 frames) through encode and decode."""
    model.eval()
    scores = []
    for i in range(clips):
        clip = world.clip(HELD_OUT_SEED + i)
        frames = clip.structure if structure else clip.frames
        codes = model.encode(torch.from_numpy(video_to_model(frames)))
        recon = frames_from_model(model.decode(codes)[0].numpy())
        scores.append(psnr(recon, frames))
    return scores
