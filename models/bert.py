"""A BERT encoder (post-norm, GELU), written for vp and loaded from HuggingFace safetensors.

Used for all-MiniLM-L6-v2, the text encoder every vp preset ships with.
tests/models/test_text_encoder.py checks it against transformers' BertModel
on the same weights.
"""

from __future__ import annotations

import math
import re

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.layers import LayerNorm, attend, merge_heads, split_heads

# HuggingFace key -> vp key, applied in order (vp.models.text_encoder.load_encoder).
CHECKPOINT_RENAMES = (
    (r"^bert\.", ""),
    (r"^embeddings\.word_embeddings\.", "embed_words."),
    (r"^embeddings\.position_embeddings\.", "embed_positions."),
    (r"^embeddings\.token_type_embeddings\.", "embed_types."),
    (r"^embeddings\.LayerNorm\.", "embed_norm."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.query\.", r"layers.\1.q."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.key\.", r"layers.\1.k."),
    (r"^encoder\.layer\.(\d+)\.attention\.self\.value\.", r"layers.\1.v."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.dense\.", r"layers.\1.o."),
    (r"^encoder\.layer\.(\d+)\.attention\.output\.LayerNorm\.", r"layers.\1.attn_norm."),
    (r"^encoder\.layer\.(\d+)\.intermediate\.dense\.", r"layers.\1.up."),
    (r"^encoder\.layer\.(\d+)\.output\.dense\.", r"layers.\1.down."),
    (r"^encoder\.layer\.(\d+)\.output\.LayerNorm\.", r"layers.\1.mlp_norm."),
)
# checkpoint tensors the encoder does not use
CHECKPOINT_UNUSED = re.compile(r"^(pooler\.|cls\.|embeddings\.position_ids)")


class BertLayer(nn.Module):
    def __init__(self, hidden: int, heads: int, intermediate: int, eps: float):
        super().__init__()
        self.heads = heads
        self.q, self.k, self.v, self.o = (nn.Linear(hidden, hidden) for _ in range(4))
        self.attn_norm = LayerNorm(hidden, eps=eps)
        self.up = nn.Linear(hidden, intermediate)
        self.down = nn.Linear(intermediate, hidden)
        self.mlp_norm = LayerNorm(hidden, eps=eps)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        q, k, v = (split_heads(f(x), self.heads) for f in (self.q, self.k, self.v))
        h = merge_heads(attend(q, k, v, mask, scale=1 / math.sqrt(q.shape[-1])))
        x = self.attn_norm(x + self.o(h))
        return self.mlp_norm(x + self.down(F.gelu(self.up(x))))


class BertEncoder(nn.Module):
    """forward(ids [B, L] int64, mask [B, L] bool) -> hidden states [B, L, hidden_size]."""

    def __init__(self, config: dict):
        super().__init__()
        if config.get("hidden_act", "gelu") != "gelu":
            raise ValueError(f"BERT hidden_act {config['hidden_act']!r} is not supported (only 'gelu')")
        hidden, eps = config["hidden_size"], config.get("layer_norm_eps", 1e-12)
        self.hidden_size = hidden
        self.vocab_size = config["vocab_size"]
        self.embed_words = nn.Embedding(config["vocab_size"], hidden)
        self.embed_positions = nn.Embedding(config["max_position_embeddings"], hidden)
        self.embed_types = nn.Embedding(config.get("type_vocab_size", 2), hidden)
        self.embed_norm = LayerNorm(hidden, eps=eps)
        self.layers = nn.ModuleList(
            BertLayer(hidden, config["num_attention_heads"], config["intermediate_size"], eps)
            for _ in range(config["num_hidden_layers"])
        )

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        positions = torch.arange(ids.shape[1], device=ids.device)
        x = self.embed_words(ids) + self.embed_positions(positions)[None] + self.embed_types.weight[0]
        x = self.embed_norm(x)
        for layer in self.layers:
            x = layer(x, mask)
        return x


ENCODER = BertEncoder
