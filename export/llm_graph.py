"""The LLM as an exportable graph over a paged KV cache (docs/engine-contract.md).

One graph serves prefill (T new tokens of one or more sequences) and decode
(T = 1). The runtime owns the KV pool and passes it as one input per layer and
K/V (vp.runtime.kv_pool); each layer's attention multiplies the queries of the
whole batch with every slot of its K plane and its V plane in place, the slots
that are not a sequence's past masked out (a mask built once per call from the
block table), and the graph returns the new K/V for the runtime to commit.
Standard ONNX ops only (MatMul, Where, Softmax): ONNX Runtime runs them on a
CPU and the TensorRT parser accepts them.

It computes what the reference PrefixLM computes, with its weights and its
norm and projection modules, in the same floating-point operations (a fused
projection computes each output's dot product as before; the parity tests
hold the logits to the reference), but written for a lean graph: a decode
step is a few hundred small operations around the weight MatMuls, and each
costs a kernel launch (docs/benchmarks.md, the lean LLM graph):
- whatever does not depend on the layer is computed once: the mask (already
  repeated over the query heads of a KV head), rotary cos/sin at full head
  width;
- rotary is x * cos + x[..., (x2, x1)] * (-sin, sin): a Gather of the head
  dim by a constant index and three elementwise ops, where the reference's
  halves take nine; the same products and sums (x1 * cos + x2 * -sin equals
  x1 * cos - x2 * sin exactly);
- wq, wk and wv are one MatMul (wqkv), and so are w_gate and w_up
  (w_gate_up): larger products, fewer of them, and rotary turns q's and k's
  heads in one pass;
- heads stay in [B, T, heads, hd] until attention needs [B, heads, T, hd], and
  the new K/V of all layers leave in one Concat, not a stack per layer;
- vp.export.shape_folding then replaces the traced shape arithmetic of every
  Reshape with constant shapes.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.prefix_lm import MLP, Attention, Block, PrefixLM, prefix_lm_mask, rotary


def fused(*linears: nn.Linear) -> nn.Linear:
    """One bias-free Linear whose outputs are the outputs of `linears` side by side (their weights
    concatenated: one MatMul reads the shared input once where there were len(linears))."""
    weight = torch.cat([linear.weight.detach() for linear in linears])
    out = nn.Linear(weight.shape[1], weight.shape[0], bias=False, device=weight.device, dtype=weight.dtype)
    out.weight = nn.Parameter(weight, requires_grad=False)
    return out


# graph module (in a block) -> the reference modules it fuses, in output order
FUSED = {"attn.wqkv": ("attn.wq", "attn.wk", "attn.wv"), "mlp.w_gate_up": ("mlp.w_gate", "mlp.w_up")}


class PagedAttention(nn.Module):
    """The reference Attention over the KV pool's planes, with wq, wk and wv fused into wqkv."""

    def __init__(self, attn: Attention):
        super().__init__()
        self.wqkv, self.wo = fused(attn.wq, attn.wk, attn.wv), attn.wo
        self.heads, self.kv_heads, self.head_dim = attn.n_heads, attn.n_kv_heads, attn.head_dim

    def forward(self, h, rope, mask, k_plane, v_plane, dims):
        """h [B, T, D] normed; rope (cos, sin, rotate_index) of PagedPrefixLM; mask [1, 1, B, T, N + T] bool
        (the N pool slots, then the T new keys); k_plane/v_plane [KVH, num_blocks, block_size, hd] (N slots);
        dims (B, T, N). Returns (out [B, T, D], k [B, T, KVH, hd] rotated, v [B, T, KVH, hd]).

        Each query head of each sequence is one [T, hd] matrix against its KV head's plane
        ([KVH, g * B, T, hd] against [KVH, 1, N, hd], g = H / KVH): a decode step (T = 1) is then
        a matrix-vector product per head, which ONNX Runtime's CPU kernels stream from memory
        about 1.7x faster than a product of the g * B rows at once (docs/benchmarks.md), and the
        g * B products of a KV head reread the plane from cache."""
        B, T, N = dims
        H, KVH, hd = self.heads, self.kv_heads, self.head_dim
        g = H // KVH
        qk, v = self.wqkv(h).view(B, T, H + 2 * KVH, hd).split([H + KVH, KVH], dim=2)
        q, k = _rotate(qk, *rope).split([H, KVH], dim=2)  # rotary is per head: q's and k's heads at once
        q = q.view(B, T, KVH, g, hd).permute(2, 3, 0, 1, 4).float()  # (KVH, g, B, T, hd)
        past = q.reshape(KVH, g * B, T, hd) @ k_plane.reshape(KVH, 1, N, hd).float().transpose(-1, -2)
        new = q @ k.permute(2, 0, 3, 1)[:, None].float()  # (KVH, g, B, T, T)
        scores = torch.cat([past.view(KVH, g, B, T, N), new], dim=-1) / math.sqrt(hd)
        scores = scores.masked_fill(~mask, float("-inf"))
        weights = scores.softmax(-1).to(v.dtype)  # (KVH, g, B, T, N + T)
        out = (weights[..., N:] @ v.permute(2, 0, 1, 3)[:, None]
               + (weights[..., :N].reshape(KVH, g * B, T, N) @ v_plane.reshape(KVH, 1, N, hd)).view(KVH, g, B, T, hd))
        out = out.permute(2, 3, 0, 1, 4).reshape(B, T, H * hd)  # head kvh * g + gi
        return self.wo(out), k, v


class PagedMLP(nn.Module):
    """The reference MLP with w_gate and w_up fused into w_gate_up: w_down(silu(gate) * up)."""

    def __init__(self, mlp: MLP):
        super().__init__()
        self.w_gate_up, self.w_down = fused(mlp.w_gate, mlp.w_up), mlp.w_down

    def forward(self, x):
        hidden = self.w_down.in_features
        gate, up = self.w_gate_up(x).split([hidden, hidden], dim=-1)
        return self.w_down(F.silu(gate) * up)


class PagedBlock(nn.Module):
    """One reference Block over the paged past K/V: its norms, PagedAttention and PagedMLP.

    Registered as `blocks.<i>` with the reference's child names, so every weight MatMul is named
    after its module (/blocks.0/attn/wqkv/MatMul: vp.calibration addresses weights by it; FUSED
    says which reference modules a fused one holds).
    """

    def __init__(self, block: Block):
        super().__init__()
        self.attn_norm, self.mlp_norm = block.attn_norm, block.mlp_norm
        self.attn, self.mlp = PagedAttention(block.attn), PagedMLP(block.mlp)

    def forward(self, x, rope, mask, k_plane, v_plane, dims):
        """x [B, T, D] -> (x, k, v); see PagedAttention.forward."""
        h, k, v = self.attn(self.attn_norm(x), rope, mask, k_plane, v_plane, dims)
        x = x + h
        return x + self.mlp(self.mlp_norm(x)), k, v


def _rotate(x, cos, sin, rotate_index):
    """x [B, T, heads, hd] rotated: x * cos + x[..., (x2, x1)] * (-sin, sin), in float32."""
    xf = x.float()
    return (xf * cos + xf.index_select(-1, rotate_index) * sin).to(x.dtype)


class PagedPrefixLM(nn.Module):
    """forward(input_ids, input_embeds, embed_mask, position_ids, block_table, context_lens, prefix_lens,
    *planes) -> (logits, new_kv)

    input_ids:    [B, T] int64   token ids of the T new positions
    input_embeds: [B, T, D] float  text embeddings, read where embed_mask is True
    embed_mask:   [B, T] bool
    position_ids: [B, T] int64   absolute positions (context_lens + 0..T-1)
    block_table:  [B, max_blocks] int64   pool block of each logical block
    context_lens: [B] int64      tokens already in the pool (positions 0..context_len-1)
    prefix_lens:  [B] int64      bidirectional prefix length (prefix-LM mask)
    planes:       2 * layers of [KVH, num_blocks, block_size, hd] float: each layer's K, then its V
                  (vp.runtime.kv_pool; vp.engines.contract.kv_planes)
    ->
    logits:       [B, V] float32 of the last new position
    new_kv:       [layers, 2, kv_heads, B, T, head_dim] K (rotated) and V of the new positions
    """

    def __init__(self, model: PrefixLM):
        super().__init__()
        self.config = model.config
        self.tok_embeddings = model.tok_embeddings
        self.blocks = nn.ModuleList(PagedBlock(block) for block in model.blocks)
        self.norm = model.norm
        half = model.config.head_dim // 2
        self.register_buffer("rotate_index", torch.cat([torch.arange(half, 2 * half), torch.arange(half)]),
                             persistent=False)

    def forward(self, input_ids, input_embeds, embed_mask, position_ids, block_table, context_lens, prefix_lens,
                *planes):
        c = self.config
        KVH, hd = c.n_kv_heads, c.head_dim
        B, T = input_ids.shape
        num_blocks, block_size = planes[0].shape[1], planes[0].shape[2]
        N = num_blocks * block_size
        mask = torch.cat([self._past_slots(block_table, context_lens, num_blocks, block_size)[:, None, None, :]
                          .expand(B, 1, T, N),
                          prefix_lm_mask(position_ids, position_ids, prefix_lens, torch.ones_like(embed_mask))], dim=-1)
        mask = mask.transpose(0, 1)[None]  # (1, 1, B, T, N + T): every KV head and query head of a sequence
        cos, sin = rotary(position_ids, hd, c.rope_theta)  # (B, 1, T, hd/2)
        cos, sin = torch.cat([cos, cos], -1), torch.cat([-sin, sin], -1)
        rope = (cos.transpose(1, 2), sin.transpose(1, 2), self.rotate_index)  # (B, T, 1, hd) each
        # One [D, V] tensor serves the token lookup and the tied output projection, so the
        # graph stores the embedding once (the exporter pre-transposes MatMul weights; a
        # separate lookup would keep a second copy: +0.9 GB for the paper vocabulary in fp32).
        table = self.tok_embeddings.weight.t()  # (D, V)
        x = table[:, input_ids].permute(1, 2, 0)  # (B, T, D)
        x = torch.where(embed_mask[..., None], input_embeds.to(x.dtype), x)
        new = []
        for layer, block in enumerate(self.blocks):
            x, k, v = block(x, rope, mask, planes[2 * layer], planes[2 * layer + 1], (B, T, N))
            new += [k, v]
        # all layers' new K and V in one Concat: (B, T, L * 2 * KVH, hd) -> the pool's (L, 2, KVH, B, T, hd)
        new_kv = torch.cat(new, dim=2).view(B, T, c.n_layers, 2, KVH, hd).permute(2, 3, 4, 0, 1, 5)
        logits = (self.norm(x[:, -1]) @ table).float()  # (B, V)
        return logits, new_kv.to(planes[0].dtype)

    @staticmethod
    def _past_slots(block_table, context_lens, num_blocks: int, block_size: int):
        """[B, num_blocks * block_size] bool: the pool slots that hold each sequence's past. Logical
        block j of sequence b (pool block block_table[b, j]) holds its first
        clamp(context_len - j * block_size, 0, block_size) slots; a pool block no valid entry names
        (another sequence's, a free one, or a table's padding) holds none."""
        starts = torch.arange(block_table.shape[1], device=block_table.device) * block_size
        filled = (context_lens[:, None] - starts).clamp(0, block_size).float()  # (B, max_blocks)
        held = block_table[:, :, None] == torch.arange(num_blocks, device=block_table.device)  # (B, max_blocks, NB)
        per_block = filled[:, None, :] @ held.float()  # (B, 1, NB): a sequence names a pool block once
        slots = torch.arange(block_size, device=block_table.device).float()
        return (slots < per_block[:, 0, :, None]).reshape(block_table.shape[0], num_blocks * block_size)
