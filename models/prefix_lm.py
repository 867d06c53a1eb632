"""The prefix LM: VideoPoet's decoder-only transformer over discrete tokens.

Pre-norm (RMSNorm), rotary positions, optional grouped-query attention, gated
(SwiGLU) MLP, input and output embeddings tied. Attention follows the prefix-LM
mask: bidirectional inside the prefix (the conditioning), causal after it (the
output). Text conditioning enters as embeddings at the layout's text slots.

The blocks take past K/V explicitly, so the same `Block` serves the contiguous
`KVCache` of the reference loop here and the paged graph of vp.export.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.checks import check_range, check_tensor
from vp.models.layers import RMSNorm


@dataclass(frozen=True, kw_only=True)
class PrefixLMConfig:
    """Dimensions of the prefix LM. The paper fixes none but the vocabulary.

    n_kv_heads: key/value heads (grouped-query attention when < n_heads).
    max_seq_len: longest sequence a layout may build (~5k tokens covers the
        paper's longest layouts; vp's paper presets use 6144).
    """

    vocab_size: int
    d_model: int
    n_layers: int
    n_heads: int
    n_kv_heads: int
    mlp_hidden: int
    max_seq_len: int = 6144
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5

    def __post_init__(self) -> None:
        if self.d_model % self.n_heads:
            raise ValueError(f"d_model {self.d_model} is not divisible by n_heads {self.n_heads}")
        if self.n_heads % self.n_kv_heads:
            raise ValueError(f"n_heads {self.n_heads} is not divisible by n_kv_heads {self.n_kv_heads}")
        if self.head_dim % 2:
            raise ValueError(f"head_dim {self.head_dim} must be even for rotary positions")

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads


def rotary(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """positions [B, T] int64 -> (cos, sin) [B, 1, T, head_dim/2] float32."""
    inv_freq = theta ** (-torch.arange(0, head_dim, 2, dtype=torch.float32, device=positions.device) / head_dim)
    angles = positions.float()[:, None, :, None] * inv_freq  # (B, 1, T, hd/2)
    return angles.cos(), angles.sin()


def apply_rotary(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """x [B, H, T, hd]: rotate the (first half, second half) pairs by the angles."""
    x1, x2 = x.float().chunk(2, dim=-1)
    out = torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1)
    return out.to(x.dtype)


def prefix_lm_mask(
    q_pos: torch.Tensor, k_pos: torch.Tensor, prefix_lens: torch.Tensor, k_valid: torch.Tensor
) -> torch.Tensor:
    """Which keys each query may read.

    q_pos: [B, T] absolute query positions; k_pos: [B, S] absolute key positions;
    prefix_lens: [B]; k_valid: [B, S] bool (the key exists).
    Returns [B, 1, T, S] bool: key j is visible to query i when it exists and
    (j < prefix_len, bidirectional prefix) or (j <= i, causal output).
    """
    k = k_pos[:, None, :]  # (B, 1, S)
    allowed = (k < prefix_lens[:, None, None]) | (k <= q_pos[:, :, None])  # (B, T, S)
    return (allowed & k_valid[:, None, :])[:, None]  # (B, 1, T, S)


class Attention(nn.Module):
    def __init__(self, config: PrefixLMConfig):
        super().__init__()
        self.n_heads, self.n_kv_heads, self.head_dim = config.n_heads, config.n_kv_heads, config.head_dim
        kv_width = config.n_kv_heads * config.head_dim
        self.wq = nn.Linear(config.d_model, config.d_model, bias=False)
        self.wk = nn.Linear(config.d_model, kv_width, bias=False)
        self.wv = nn.Linear(config.d_model, kv_width, bias=False)
        self.wo = nn.Linear(config.d_model, config.d_model, bias=False)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        """x [B, T, D]; past_k/past_v [B, KVH, S_past, hd] or None; mask [B, 1, T, S_past + T].

        Returns (out [B, T, D], k [B, KVH, T, hd], v [B, KVH, T, hd]): the new
        positions' K (rotated) and V, for the caller to cache.
        """
        B, T, _ = x.shape
        q = self.wq(x).view(B, T, self.n_heads, self.head_dim).transpose(1, 2)  # (B, H, T, hd)
        k = self.wk(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)  # (B, KVH, T, hd)
        v = self.wv(x).view(B, T, self.n_kv_heads, self.head_dim).transpose(1, 2)
        q, k = apply_rotary(q, cos, sin), apply_rotary(k, cos, sin)
        # The query heads of one KV head attend together (B, KVH, groups * T, hd), and past and
        # new keys are scored separately: no K/V is repeated per head or concatenated (copies
        # that dominated a decode step's memory traffic in the paged graph).
        groups = self.n_heads // self.n_kv_heads
        qg = q.reshape(B, self.n_kv_heads, groups * T, self.head_dim).float()
        scores = qg @ k.float().transpose(-1, -2)  # (B, KVH, groups * T, T)
        past = 0 if past_k is None else past_k.shape[2]
        if past:
            scores = torch.cat([qg @ past_k.float().transpose(-1, -2), scores], dim=-1)  # (B, KVH, gT, S)
        scores = scores.view(B, self.n_kv_heads, groups, T, past + T) / math.sqrt(self.head_dim)
        scores = scores.masked_fill(~mask[:, :, None], float("-inf"))  # mask (B, 1, 1, T, S)
        weights = scores.softmax(-1).view(B, self.n_kv_heads, groups * T, past + T).to(v.dtype)
        out = weights[..., past:] @ v  # (B, KVH, gT, hd)
        if past:
            out = out + weights[..., :past] @ past_v.to(v.dtype)
        out = out.view(B, self.n_heads, T, self.head_dim).transpose(1, 2).reshape(B, T, -1)
        return self.wo(out), k, v


class MLP(nn.Module):
    def __init__(self, config: PrefixLMConfig):
        super().__init__()
        self.w_gate = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.w_up = nn.Linear(config.d_model, config.mlp_hidden, bias=False)
        self.w_down = nn.Linear(config.mlp_hidden, config.d_model, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.w_down(F.silu(self.w_gate(x)) * self.w_up(x))


class Block(nn.Module):
    def __init__(self, config: PrefixLMConfig):
        super().__init__()
        self.attn_norm = RMSNorm(config.d_model, config.norm_eps)
        self.attn = Attention(config)
        self.mlp_norm = RMSNorm(config.d_model, config.norm_eps)
        self.mlp = MLP(config)

    def forward(self, x, cos, sin, mask, past_k=None, past_v=None):
        """Returns (x [B, T, D], k_new, v_new); see Attention.forward."""
        h, k, v = self.attn(self.attn_norm(x), cos, sin, mask, past_k, past_v)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), k, v


class KVCache:
    """Contiguous K/V of B sequences that advance together (the reference's cache).

    k[layer], v[layer]: [B, KVH, max_len, hd]; positions [0, length) are filled.
    """

    def __init__(self, config: PrefixLMConfig, batch: int, max_len: int | None = None,
                 dtype: torch.dtype = torch.float32):
        self.max_len = max_len or config.max_seq_len
        shape = (batch, config.n_kv_heads, self.max_len, config.head_dim)
        self.k = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.v = [torch.zeros(shape, dtype=dtype) for _ in range(config.n_layers)]
        self.batch = batch
        self.length = 0

    def past(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        return self.k[layer][:, :, :self.length], self.v[layer][:, :, :self.length]

    def write(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> None:
        """Store the new positions' K/V [B, KVH, T, hd] after the filled ones."""
        T = k.shape[2]
        self.k[layer][:, :, self.length:self.length + T] = k
        self.v[layer][:, :, self.length:self.length + T] = v


class PrefixLM(nn.Module):
    """Decoder-only prefix LM.

    model(ids [B, T] int64, prefix_lens [B] int64, embeds=None, embed_mask=None,
    cache=None) -> logits [B, T, vocab_size] float32.

    embeds [B, T, D] float with embed_mask [B, T] bool: where the mask is True
    the input is that embedding (text slots) instead of the token embedding.
    With a cache, the T positions continue after the cache's `length` and
    their K/V are appended to it.
    """

    def __init__(self, config: PrefixLMConfig):
        super().__init__()
        self.config = config
        self.tok_embeddings = nn.Embedding(config.vocab_size, config.d_model)
        self.blocks = nn.ModuleList(Block(config) for _ in range(config.n_layers))
        self.norm = RMSNorm(config.d_model, config.norm_eps)
        self.apply(self._init_weights)

    @staticmethod
    def _init_weights(module: nn.Module) -> None:
        if isinstance(module, (nn.Linear, nn.Embedding)):
            nn.init.normal_(module.weight, mean=0.0, std=0.02)

    def input_embeddings(self, ids, embeds=None, embed_mask=None) -> torch.Tensor:
        """[B, T, D]: token embeddings, replaced by `embeds` where `embed_mask` is True."""
        x = self.tok_embeddings(ids)
        if embeds is None:
            return x
        return torch.where(embed_mask[..., None], embeds.to(x.dtype), x)

    def output_logits(self, x: torch.Tensor) -> torch.Tensor:
        """x [B, T, D] -> logits [B, T, V] float32 (tied output embedding)."""
        return (self.norm(x) @ self.tok_embeddings.weight.T).float()

    def forward(self, ids, prefix_lens, embeds=None, embed_mask=None, cache: KVCache | None = None):
        start = cache.length if cache is not None else 0
        self._check(ids, prefix_lens, embeds, embed_mask, cache, start)
        B, T = ids.shape
        q_pos = torch.arange(start, start + T).expand(B, T)  # (B, T)
        k_pos = torch.arange(start + T).expand(B, start + T)  # (B, S)
        mask = prefix_lm_mask(q_pos, k_pos, prefix_lens, torch.ones_like(k_pos, dtype=torch.bool))
        cos, sin = rotary(q_pos, self.config.head_dim, self.config.rope_theta)
        x = self.input_embeddings(ids, embeds, embed_mask)
        for layer, block in enumerate(self.blocks):
            past_k, past_v = cache.past(layer) if cache is not None else (None, None)
            x, k, v = block(x, cos, sin, mask, past_k, past_v)
            if cache is not None:
                cache.write(layer, k, v)
        if cache is not None:
            cache.length += T
        return self.output_logits(x)

    def _check(self, ids, prefix_lens, embeds, embed_mask, cache, start) -> None:
        c = self.config
        check_tensor("ids", ids, ndim=2, floating=False, layout="[B, T]")
        B, T = ids.shape
        check_range("ids", ids, 0, c.vocab_size)
        check_tensor("prefix_lens", prefix_lens, ndim=1, floating=False, shape=(B,), layout="[B]")
        if (embeds is None) != (embed_mask is None):
            raise ValueError("embeds and embed_mask come together")
        if embeds is not None:
            check_tensor("embeds", embeds, ndim=3, floating=True, shape=(B, T, c.d_model), layout="[B, T, D]")
            check_tensor("embed_mask", embed_mask, ndim=2, shape=(B, T), layout="[B, T]")
            if embed_mask.dtype != torch.bool:
                raise ValueError(f"embed_mask [B, T]: expected bool, got {embed_mask.dtype}")
        limit = cache.max_len if cache is not None else c.max_seq_len
        if start + T > limit:
            raise ValueError(f"sequence of {start + T} tokens exceeds the limit of {limit}")
        if cache is not None and cache.batch != B:
            raise ValueError(f"cache holds {cache.batch} sequences, ids have {B}")
