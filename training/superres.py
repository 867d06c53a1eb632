"""Training recipe of the demo super-resolution stage (64x64 -> 128x128 latent tokens).

Pairs: the low-res codes of a clip and the codes of the same clip rendered at
128x128 (token dataset rows that have them). MaskGIT training: a cosine
schedule draws the share of high-res tokens to mask, the loss is each factor
head's cross-entropy on the masked tokens. The text it cross-attends to is
the caption through the frozen encoder and the LLM stage's trained
projection (the embeddings the runtime gives it); 10% of examples drop it.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vp.models.superres import SuperResolution
from vp.training.captions import training_caption
from vp.training.llm import TextCache
from vp.training.stage import Schedule, Stage
from vp.training.tokens import attributes_of


@dataclass(frozen=True, kw_only=True)
class SuperResRecipe:
    steps: int = 800
    batch: int = 16
    lr: float = 1e-3
    text_dropout: float = 0.1
    seed: int = 5


def losses(model: SuperResolution, low: torch.Tensor, high: torch.Tensor, text: torch.Tensor,
           text_mask: torch.Tensor, rng: np.random.Generator) -> dict[str, torch.Tensor]:
    """low [B, N_lo], high [B, N_hi] int64 codes; text [B, L, width], text_mask [B, L] bool."""
    c = model.config
    B, N = high.shape
    ratio = np.cos(np.pi / 2 * rng.uniform(size=B))  # (B,) share of tokens masked
    scores = torch.from_numpy(rng.uniform(size=(B, N)))
    count = torch.from_numpy(np.maximum(1, np.ceil(ratio * N)).astype(np.int64))
    rank = scores.argsort(-1).argsort(-1)
    masked = rank < count[:, None]  # (B, N)
    tokens = torch.where(masked, torch.full_like(high, c.mask_id), high)
    logits = model(tokens, low, text, text_mask).float()  # (B, N, k, classes)
    loss = high.new_zeros((), dtype=torch.float32)
    for j in range(c.factors):
        factor = (high // c.classes**j) % c.classes
        loss = loss + F.cross_entropy(logits[:, :, j][masked], factor[masked])
    accuracy = (logits.argmax(-1) == torch.stack([(high // c.classes**j) % c.classes
                                                  for j in range(c.factors)], -1)).all(-1)[masked].float().mean()
    return {"loss": loss / c.factors, "masked_accuracy": accuracy}


def train(model: SuperResolution, projection: nn.Linear, recipe: SuperResRecipe, work,
          data: dict[str, np.ndarray], text: TextCache) -> SuperResolution:
    rows = np.nonzero(data["hires"][:, 0, 0, 0] >= 0)[0]

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
        pick = rng.choice(rows, size=recipe.batch)
        hidden = []
        for row in pick:
            a = attributes_of(data["attributes"][row])
            hidden.append(text(training_caption(a, rng)) if rng.uniform() >= recipe.text_dropout else None)
        L = max([1] + [len(h) for h in hidden if h is not None])
        states = torch.zeros(recipe.batch, L, projection.in_features)
        mask = torch.zeros(recipe.batch, L, dtype=torch.bool)
        for b, h in enumerate(hidden):
            if h is not None:
                states[b, :len(h)], mask[b, :len(h)] = h, True
        with torch.no_grad():
            embeddings = projection(states) * mask[..., None]
        low = torch.from_numpy(data["video"][pick].reshape(recipe.batch, -1))
        high = torch.from_numpy(data["hires"][pick].reshape(recipe.batch, -1))
        return losses(model, low, high, embeddings, mask, rng)

    stage = Stage("superres", model, Schedule(steps=recipe.steps, lr=recipe.lr), work)
    return stage.train(step_fn)
