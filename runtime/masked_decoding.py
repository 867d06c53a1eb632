"""MaskGIT-style iterative decoding of the super-resolution tokens, with guidance.

numpy only: the torch reference and the runtime decode with this one loop,
each passing its own `logits_fn` (a torch module or an engine).

Each step predicts every position, samples a code for each masked one (each
of the k factors from its own head), and keeps the most confident; the rest
are masked again. The number left masked after step s follows the cosine
schedule N * cos(pi/2 * (s + 1) / steps), so the last step fills everything.
Confidence is the log-probability of the sampled code plus Gumbel noise
scaled by choice_temperature * (1 - (s + 1) / steps), as in MaskGIT.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def guided_logits(
    full: np.ndarray,
    no_text: np.ndarray | None,
    no_lowres: np.ndarray | None,
    *,
    cfg_text: float,
    cfg_lowres: float,
) -> np.ndarray:
    """Classifier-free guidance on two conditions:
    full + (cfg_text - 1)(full - no_text) + (cfg_lowres - 1)(full - no_lowres).
    A branch may be None when its scale is 1 (it is not run)."""
    out = full
    for scale, branch, name in ((cfg_text, no_text, "no_text"), (cfg_lowres, no_lowres, "no_lowres")):
        if scale == 1.0:
            continue
        if branch is None:
            raise ValueError(f"guidance scale {scale} needs the {name} logits")
        out = out + (scale - 1.0) * (full - branch)
    return out


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x - x.max(-1, keepdims=True)
    return x - np.log(np.exp(x).sum(-1, keepdims=True))


def masked_decode(
    logits_fn: Callable[[np.ndarray], np.ndarray],
    *,
    num_tokens: int,
    factors: int,
    classes: int,
    steps: int,
    rng: np.random.Generator,
    temperature: float = 1.0,
    batch: int = 1,
    choice_temperature: float = 4.5,
) -> np.ndarray:
    """Decode `batch` grids of `num_tokens` codes in [0, classes^factors).

    logits_fn(tokens [batch, num_tokens] int64, classes^factors = masked)
        -> logits [batch, num_tokens, factors, classes].
    temperature 0 samples greedily. Returns codes [batch, num_tokens] int64.
    """
    if steps < 1:
        raise ValueError(f"steps must be >= 1, got {steps}")
    mask_id = classes**factors
    weights = classes ** np.arange(factors, dtype=np.int64)  # code = sum factor_j * classes^j
    tokens = np.full((batch, num_tokens), mask_id, np.int64)
    for step in range(steps):
        logits = np.asarray(logits_fn(tokens), np.float64)
        expected = (batch, num_tokens, factors, classes)
        if logits.shape != expected:
            raise ValueError(f"logits_fn returned shape {logits.shape}, expected {expected}")
        if temperature > 0:
            logp = _log_softmax(logits / temperature)
            choice = (logp + rng.gumbel(size=logp.shape)).argmax(-1)  # (B, N, k)
        else:
            logp = _log_softmax(logits)
            choice = logp.argmax(-1)
        codes = (choice * weights).sum(-1)
        confidence = np.take_along_axis(logp, choice[..., None], -1)[..., 0].sum(-1)  # (B, N)
        masked = tokens == mask_id
        ratio = (step + 1) / steps
        confidence = confidence + choice_temperature * (1.0 - ratio) * rng.gumbel(size=confidence.shape)
        confidence = np.where(masked, confidence, np.inf)  # known tokens are never re-masked
        unknown = masked.sum(-1)  # (B,)
        remask = np.floor(num_tokens * np.cos(np.pi / 2 * ratio)).astype(np.int64)
        remask = np.clip(remask, 0, np.maximum(unknown - 1, 0)) if step < steps - 1 else np.zeros_like(unknown)
        tokens = np.where(masked, codes, tokens)
        order = np.argsort(confidence, axis=-1, kind="stable")
        for b in range(batch):
            tokens[b, order[b, :remask[b]]] = mask_id
    return tokens
