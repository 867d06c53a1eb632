"""Token sampling shared by the torch reference and the lean runtime.

numpy only, so that a seeded reference run and a seeded runtime run draw the
same tokens from the same logits: both call `sample` with a
`numpy.random.Generator` made by `make_rng(seed)`.

The paper leaves temperature, top-k, top-p and the LLM's CFG scale open; the
defaults below are vp's choice and travel in each bundle's manifest.
"""

from __future__ import annotations

from dataclasses import asdict, dataclass

import numpy as np


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How the next token is drawn.

    temperature: 0 means greedy (argmax), otherwise logits are divided by it.
    top_k: keep the k most likely ids (0 = no limit).
    top_p: keep the smallest set of ids whose probability reaches p (1.0 = all).
    cfg_scale: classifier-free guidance, logits = uncond + s * (cond - uncond);
        1.0 means no guidance (the unconditional branch is not run).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    cfg_scale: float = 3.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "cfg_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)):
            raise ValueError(f"top_k must be a whole number (0 = off), got {self.top_k!r}")
        object.__setattr__(self, "top_k", int(self.top_k))
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not self.cfg_scale >= 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    def to_dict(self) -> dict:
        return asdict(self)


def make_rng(seed: int) -> np.random.Generator:
    """The one generator both the reference and the runtime draw from."""
    return np.random.Generator(np.random.PCG64(seed))


def cfg_mix(cond: np.ndarray, uncond: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance: uncond + scale * (cond - uncond), in float32."""
    cond = np.asarray(cond, np.float32)
    if scale == 1.0:
        return cond
    uncond = np.asarray(uncond, np.float32)
    return uncond + np.float32(scale) * (cond - uncond)


def sample(
    logits: np.ndarray,
    *,
    low: int,
    high: int,
    config: SamplingConfig,
    rng: np.random.Generator,
) -> np.ndarray:
    """Draw one id per row from `logits` restricted to the ids [low, high).

    logits: [B, V] float. Returns ids: [B] int64, every one in [low, high).
    The restriction is how the layout keeps visual ids inside the video block
    and each audio level inside its own range. A non-greedy draw consumes
    exactly one uniform number per row from `rng`.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits [B, V]: expected 2 dims, got shape {logits.shape}")
    if not 0 <= low < high <= logits.shape[1]:
        raise ValueError(f"id range [{low}, {high}) does not fit a vocabulary of {logits.shape[1]}")
    window = logits[:, low:high].astype(np.float64)  # (B, high - low)
    if config.temperature == 0:
        return window.argmax(axis=1).astype(np.int64) + low
    window = window / config.temperature
    if 0 < config.top_k < window.shape[1]:
        kth = np.partition(window, -config.top_k, axis=1)[:, -config.top_k][:, None]
        window = np.where(window < kth, -np.inf, window)
    probs = np.exp(window - window.max(axis=1, keepdims=True))
    probs /= probs.sum(axis=1, keepdims=True)
    if config.top_p < 1.0:
        drop = np.stack([_outside_top_p(row, config.top_p) for row in probs])
        probs = np.where(drop, 0.0, probs)
        probs /= probs.sum(axis=1, keepdims=True)
    cdf = np.cumsum(probs, axis=1)
    u = rng.random(probs.shape[0])[:, None] * cdf[:, -1:]
    ids = (cdf <= u).sum(axis=1)
    return np.minimum(ids, probs.shape[1] - 1).astype(np.int64) + low


def _outside_top_p(probs: np.ndarray, top_p: float, head: int = 256) -> np.ndarray:
    """[n] bool: the ids outside the smallest most-likely set whose mass reaches top_p.

    Ids are ranked by probability, ties by id (a stable sort of all n ids); an id
    is kept while the mass ranked before it is below top_p. Sorting only the most
    likely `head` ids (and every id tied with the last of them) gives the same
    set whenever they hold top_p of the mass, which is the common case: a full
    sort of the 16k visual ids was most of a decode step's runtime overhead.
    """
    if head < probs.size:
        top = np.argpartition(probs, probs.size - head)[probs.size - head:]
        candidates = np.flatnonzero(probs >= probs[top].min())
        if probs[candidates].sum() >= top_p:
            order = candidates[np.lexsort((candidates, -probs[candidates]))]
            before = np.cumsum(probs[order]) - probs[order]
            drop = np.ones(probs.size, bool)
            drop[order[before < top_p]] = False
            return drop
    order = np.argsort(-probs, kind="stable")
    before = np.cumsum(probs[order]) - probs[order]
    drop = np.zeros(probs.size, bool)
    drop[order] = before >= top_p
    return drop
