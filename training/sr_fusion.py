"""Training recipe of the demo's super-resolution fusion (vp.models.sr_fusion).

Examples: training clips of the world (seeds of their own) through the shipped
video tokenizer and super-resolution stage, as generation runs them: the
clip's codes decoded (64x64) and the SR stage's codes for them, conditioned on
a training caption, decoded (128x128); the target is the clip rendered at
128x128. They are made once per set of input weights into
`work/sr_fusion/pairs-<digest>.npz` (the decoder outputs stored as float16, half
the file; the fp16 graphs compute in it). The loss is the MSE to the target,
frame by frame; the fusion's output convolution starts at zero, so step 0 is
the bicubic upscale the evaluator compares against.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from vp.models.checkpoint import Models
from vp.models.sr_fusion import SRFusion
from vp.runtime.conditioning import video_to_model
from vp.runtime.media import atomic_path
from vp.training.captions import training_caption
from vp.training.stage import Schedule, Stage
from vp.training.world import World


@dataclass(frozen=True, kw_only=True)
class SRFusionRecipe:
    clips: int = 300  # examples made (world seeds seed * 10^7 + i)
    steps: int = 1500
    batch: int = 8  # frames per step
    lr: float = 2e-3
    seed: int = 9


def build_pairs(models: Models, world: World, hires: World, recipe: SRFusionRecipe, path: Path) -> Path:
    """Write `path` (npz): low [N, 3, T, H, W] and high [N, 3, T, 2H, 2W] float16 decodes in [-1, 1],
    truth [N, T, 2H, 2W, 3] uint8; N = recipe.clips. Made whole or not at all."""
    from vp.models.reference import sr_codes

    low, high, truth = [], [], []
    decode = models.video_tokenizer.decode
    with torch.no_grad():
        for i in tqdm(range(recipe.clips), desc="sr fusion examples", unit="clip"):
            seed = recipe.seed * 10_000_000 + i
            clip = world.clip(seed)
            prompt = training_caption(clip.attributes, np.random.Generator(np.random.PCG64([recipe.seed, i])))
            codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(clip.frames)))[0].numpy()
            low.append(decode(torch.from_numpy(codes)[None])[0].half().numpy())
            sr = sr_codes(models, codes, prompt=prompt, seed=i)
            high.append(decode(torch.from_numpy(sr)[None])[0].half().numpy())
            truth.append(hires.render(clip.attributes, seed=seed).frames)
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(path, ".npz") as tmp:
        np.savez(tmp, low=np.stack(low), high=np.stack(high), truth=np.stack(truth))
    return path


def train(model: SRFusion, recipe: SRFusionRecipe, work: Path, pairs: dict[str, np.ndarray]) -> SRFusion:
    low, high = torch.from_numpy(pairs["low"]), torch.from_numpy(pairs["high"])
    truth = torch.from_numpy(pairs["truth"]).permute(0, 4, 1, 2, 3)  # [N, 3, T, 2H, 2W] uint8
    N, _, T = low.shape[:3]

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
        rows, frames = rng.integers(N, size=recipe.batch), rng.integers(T, size=recipe.batch)

        def pick(x: torch.Tensor) -> torch.Tensor:  # [N, 3, T, h, w] -> [batch, 3, 1, h, w] float
            return x[rows, :, frames][:, :, None].float()

        target = pick(truth) / 127.5 - 1
        out = model(pick(low), pick(high))
        up = F.interpolate(pick(low)[:, :, 0], scale_factor=float(model.config.scale), mode="bicubic",
                           align_corners=False)
        return {"loss": F.mse_loss(out.float(), target), "bicubic_mse": F.mse_loss(up, target[:, :, 0])}

    # fp32 steps: the fusion predicts small corrections to the upscale, and is cheap
    stage = Stage("sr_fusion", model, Schedule(steps=recipe.steps, lr=recipe.lr), work, bf16=False)
    return stage.train(step_fn)
