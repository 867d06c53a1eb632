"""A T5 encoder (pre-norm RMS, relative position buckets), written for vp.

The paper conditions on T5 XXL embeddings; a faithful config points the
text encoder at a local T5 (or T5 v1.1) folder and this module reads its
encoder half. tests/models/test_text_encoder.py checks it against
transformers' T5EncoderModel on the same weights.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.layers import RMSNorm, attend, merge_heads, split_heads

# HuggingFace key -> vp key, applied in order (vp.models.text_encoder.load_encoder).
CHECKPOINT_RENAMES = (
    (r"^(shared|encoder\.embed_tokens)\.", "embed."),
    (r"^encoder\.block\.0\.layer\.0\.SelfAttention\.relative_attention_bias\.", "relative_bias."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.SelfAttention\.([qkvo])\.", r"layers.\1.\2."),
    (r"^encoder\.block\.(\d+)\.layer\.0\.layer_norm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.DenseReluDense\.(wi|wi_0|wi_1|wo)\.", r"layers.\1.\2."),
    (r"^encoder\.block\.(\d+)\.layer\.1\.layer_norm\.", r"layers.\1.mlp_norm."),
    (r"^encoder\.final_layer_norm\.", "final_norm."),
)
CHECKPOINT_UNUSED = re.compile(r"^(decoder\.|lm_head\.)")


def relative_buckets(relative: torch.Tensor, num_buckets: int, max_distance: int) -> torch.Tensor:
    """Bidirectional T5 buckets of key - query offsets: half the buckets per sign,
    exact below num_buckets / 4, logarithmic up to max_distance."""
    half = num_buckets // 2
    bucket = (relative > 0).long() * half
    distance = relative.abs()
    exact = half // 2
    log_ratio = torch.log(distance.float().clamp(min=1) / exact) / math.log(max_distance / exact)
    far = (exact + (log_ratio * (half - exact)).long()).clamp(max=half - 1)
    return bucket + torch.where(distance < exact, distance, far)


class T5Layer(nn.Module):
    def __init__(self, config: dict, gated: bool):
        super().__init__()
        d, inner, eps = config["d_model"], config["num_heads"] * config["d_kv"], config["layer_norm_epsilon"]
        self.heads = config["num_heads"]
        self.attn_norm = RMSNorm(d, eps)
        self.q, self.k, self.v = (nn.Linear(d, inner, bias=False) for _ in range(3))
        self.o = nn.Linear(inner, d, bias=False)
        self.mlp_norm = RMSNorm(d, eps)
        self.gated = gated
        if gated:
            self.wi_0 = nn.Linear(d, config["d_ff"], bias=False)
            self.wi_1 = nn.Linear(d, config["d_ff"], bias=False)
        else:
            self.wi = nn.Linear(d, config["d_ff"], bias=False)
        self.wo = nn.Linear(config["d_ff"], d, bias=False)

    def forward(self, x: torch.Tensor, mask: torch.Tensor, bias: torch.Tensor) -> torch.Tensor:
        h = self.attn_norm(x)
        q, k, v = (split_heads(f(h), self.heads) for f in (self.q, self.k, self.v))
        x = x + self.o(merge_heads(attend(q, k, v, mask, bias=bias)))  # T5 does not scale scores
        h = self.mlp_norm(x)
        if self.gated:
            h = F.gelu(self.wi_0(h), approximate="tanh") * self.wi_1(h)
        else:
            h = F.relu(self.wi(h))
        return x + self.wo(h)


class T5Encoder(nn.Module):
    """forward(ids [B, L] int64, mask [B, L] bool) -> hidden states [B, L, d_model]."""

    def __init__(self, config: dict):
        super().__init__()
        act = config.get("feed_forward_proj", "relu")
        if act not in {"relu", "gated-gelu"}:
            raise ValueError(f"T5 feed_forward_proj {act!r} is not supported (relu or gated-gelu)")
        self.hidden_size = config["d_model"]
        self.vocab_size = config["vocab_size"]
        self.heads = config["num_heads"]
        self.num_buckets = config.get("relative_attention_num_buckets", 32)
        self.max_distance = config.get("relative_attention_max_distance", 128)
        self.embed = nn.Embedding(config["vocab_size"], config["d_model"])
        self.relative_bias = nn.Embedding(self.num_buckets, self.heads)
        self.layers = nn.ModuleList(T5Layer(config, act == "gated-gelu") for _ in range(config["num_layers"]))
        self.final_norm = RMSNorm(config["d_model"], config["layer_norm_epsilon"])

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        L = ids.shape[1]
        positions = torch.arange(L, device=ids.device)
        buckets = relative_buckets(positions[None, :] - positions[:, None], self.num_buckets, self.max_distance)
        bias = self.relative_bias(buckets).permute(2, 0, 1)[None].float()  # (1, H, L, L)
        x = self.embed(ids)
        for layer in self.layers:
            x = layer(x, mask, bias)
        return self.final_norm(x)


ENCODER = T5Encoder
