"""Layers shared by the prefix LM, the text encoders and the super-resolution transformer.

They keep fp32 where an fp16 export needs it: normalization statistics and
attention scores and softmax.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn


class RMSNorm(nn.Module):
    """RMS norm (no mean, no bias) with fp32 statistics: the prefix LM's and T5's."""

    def __init__(self, dim: int, eps: float):
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # statistics in fp32 whatever the activation dtype (fp16 export)
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(-1, keepdim=True) + self.eps)
        return (xf * self.weight.float()).to(x.dtype)


class LayerNorm(nn.LayerNorm):
    """nn.LayerNorm computed in fp32 whatever the activation dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = None if self.weight is None else self.weight.float()
        bias = None if self.bias is None else self.bias.float()
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


def split_heads(x: torch.Tensor, heads: int) -> torch.Tensor:
    """[B, T, H * hd] -> [B, H, T, hd]."""
    B, T, _ = x.shape
    return x.view(B, T, heads, -1).transpose(1, 2)


def merge_heads(x: torch.Tensor) -> torch.Tensor:
    """[B, H, T, hd] -> [B, T, H * hd]."""
    B, H, T, hd = x.shape
    return x.transpose(1, 2).reshape(B, T, H * hd)


def attend(
    q: torch.Tensor,
    k: torch.Tensor,
    v: torch.Tensor,
    key_mask: torch.Tensor | None = None,
    bias: torch.Tensor | None = None,
    scale: float = 1.0,
) -> torch.Tensor:
    """Softmax attention with fp32 scores.

    q: [B, H, T, hd]; k, v: [B, H, S, hd]; key_mask: [B, S] bool (True = may
    be read); bias: broadcastable to [B, H, T, S]. Returns [B, H, T, hd].
    A query with no readable key gets zeros (e.g. classifier-free guidance's
    "no text" branch), never NaN.
    """
    scores = (q.float() @ k.float().transpose(-1, -2)) * scale  # (B, H, T, S)
    if bias is not None:
        scores = scores + bias
    if key_mask is not None:
        m = key_mask[:, None, None, :]  # (B, 1, 1, S)
        # a finite fill keeps a fully masked row finite; the product then zeroes it
        weights = scores.masked_fill(~m, -1e9).softmax(-1) * m
    else:
        weights = scores.softmax(-1)
    return weights.to(v.dtype) @ v
