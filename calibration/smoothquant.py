"""SmoothQuant (Xiao et al. 2023): move activation outliers into the weights before W8A8.

For a linear layer y = x W^T whose input channel j has activation range a_j and
weight range w_j (over the layers that read x), s_j = a_j^alpha / w_j^(1 - alpha);
x / s and W * s give the same y, with the activation's outlier channels shrunk
and the weights' columns grown, so both quantize to int8 with less error.
The division by s is folded into what produces x, so the float model is
unchanged (up to rounding) and the exported graph has no extra op:

    attn_norm -> wq, wk, wv        the RMSNorm weight / s
    mlp_norm  -> w_gate, w_up      the RMSNorm weight / s
    w_up      -> w_down            w_up's output rows / s (the SwiGLU product is linear in it)

wo (after attention) and the tied output projection are not smoothed: what
feeds them has no per-channel weight that can absorb s.
"""

from __future__ import annotations

import torch

from vp.models.prefix_lm import PrefixLM

DEFAULT_ALPHA = 0.5


@torch.no_grad()
def smooth(model: PrefixLM, channel_max: dict[str, torch.Tensor], alpha: float = DEFAULT_ALPHA) -> PrefixLM:
    """Apply SmoothQuant to `model` in place (channel_max: vp.calibration.statistics.channel_max of
    the unsmoothed model); returns it."""
    if not 0 < alpha < 1:
        raise ValueError(f"SmoothQuant alpha must be in (0, 1), got {alpha}")
    for i, block in enumerate(model.blocks):
        attn, mlp = block.attn, block.mlp
        s = _scales(channel_max[f"blocks.{i}.attn.wq"], (attn.wq, attn.wk, attn.wv), alpha)
        block.attn_norm.weight.div_(s)
        for linear in (attn.wq, attn.wk, attn.wv):
            linear.weight.mul_(s)
        s = _scales(channel_max[f"blocks.{i}.mlp.w_gate"], (mlp.w_gate, mlp.w_up), alpha)
        block.mlp_norm.weight.div_(s)
        for linear in (mlp.w_gate, mlp.w_up):
            linear.weight.mul_(s)
        s = _scales(channel_max[f"blocks.{i}.mlp.w_down"], (mlp.w_down,), alpha)
        mlp.w_up.weight.div_(s[:, None])
        mlp.w_down.weight.mul_(s)
    return model


def _scales(activation_max: torch.Tensor, linears, alpha: float) -> torch.Tensor:
    """[in channels] s_j = a_j^alpha / w_j^(1 - alpha), w_j the largest |W[:, j]| over `linears`."""
    weight_max = torch.stack([l.weight.abs().amax(0) for l in linears]).amax(0)
    s = activation_max.clamp(min=1e-5) ** alpha / weight_max.clamp(min=1e-5) ** (1 - alpha)
    return s.clamp(min=1e-5)
