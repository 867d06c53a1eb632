"""The LLM as an exportable graph over a paged KV cache (docs/engine-contract.md).

One graph serves prefill (T new tokens of one or more sequences) and decode
(T = 1). The runtime owns the KV pool; the graph reads past K/V through the
block table with a Gather (a standard ONNX op that ONNX Runtime runs on a CPU
and the TensorRT parser accepts), and returns the new K/V for the runtime to
commit. It reuses the reference PrefixLM's blocks and weights unchanged.
"""

from __future__ import annotations

import torch
from torch import nn

from vp.models.prefix_lm import PrefixLM, prefix_lm_mask, rotary


class PagedPrefixLM(nn.Module):
    """forward(input_ids, input_embeds, embed_mask, position_ids, kv_pool, block_table,
    context_lens, prefix_lens) -> (logits, new_kv)

    input_ids:    [B, T] int64   token ids of the T new positions
    input_embeds: [B, T, D] float  text embeddings, read where embed_mask is True
    embed_mask:   [B, T] bool
    position_ids: [B, T] int64   absolute positions (context_lens + 0..T-1)
    kv_pool:      [layers, 2, kv_heads, num_blocks, block_size, head_dim] float (vp.runtime.kv_pool)
    block_table:  [B, max_blocks] int64   pool block of each logical block
    context_lens: [B] int64      tokens already in the pool (positions 0..context_len-1)
    prefix_lens:  [B] int64      bidirectional prefix length (prefix-LM mask)
    ->
    logits:       [B, V] float32 of the last new position
    new_kv:       [layers, 2, kv_heads, B, T, head_dim] K (rotated) and V of the new positions
    """

    def __init__(self, model: PrefixLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, input_embeds, embed_mask, position_ids, kv_pool, block_table,
                context_lens, prefix_lens):
        c = self.model.config
        B, T = input_ids.shape
        num_blocks, block_size = kv_pool.shape[3], kv_pool.shape[4]
        S = block_table.shape[1] * block_size
        past_pos = torch.arange(S, device=input_ids.device)  # (S,)
        # Each layer gathers its past K and V with one Gather of whole blocks each, straight into the
        # [B, KVH, S, hd] layout the attention multiplies with (vp.runtime.kv_pool: why this layout).
        blocks = kv_pool.reshape(-1, block_size, c.head_dim)  # (L * 2 * KVH * num_blocks, bs, hd)
        heads = torch.arange(c.n_kv_heads, device=input_ids.device)
        head_blocks = heads[None, :, None] * num_blocks + block_table[:, None, :]  # (B, KVH, max_blocks)
        k_pos = torch.cat([past_pos[None].expand(B, S), position_ids], dim=1)  # (B, S + T)
        k_valid = torch.cat([past_pos[None] < context_lens[:, None], torch.ones_like(position_ids, dtype=torch.bool)], 1)
        mask = prefix_lm_mask(position_ids, k_pos, prefix_lens, k_valid)  # (B, 1, T, S + T)
        cos, sin = rotary(position_ids, c.head_dim, c.rope_theta)
        # One [D, V] tensor serves the token lookup and the tied output projection, so the
        # graph stores the embedding once (the exporter pre-transposes MatMul weights; a
        # separate lookup would keep a second copy: +0.9 GB for the paper vocabulary in fp32).
        table = self.model.tok_embeddings.weight.t()  # (D, V)
        x = table[:, input_ids].permute(1, 2, 0)  # (B, T, D)
        x = torch.where(embed_mask[..., None], input_embeds.to(x.dtype), x)
        new = []
        for layer, block in enumerate(self.model.blocks):
            k_blocks = head_blocks + 2 * layer * c.n_kv_heads * num_blocks  # in the layer's K planes
            v_blocks = k_blocks + c.n_kv_heads * num_blocks  # in its V planes
            past_k, past_v = (blocks[i].reshape(B, c.n_kv_heads, S, c.head_dim).to(x.dtype) for i in (k_blocks, v_blocks))
            x, k, v = block(x, cos, sin, mask, past_k, past_v)
            new.append(torch.stack([k, v]))  # (2, B, KVH, T, hd)
        new_kv = torch.stack(new).transpose(2, 3)  # (L, 2, KVH, B, T, hd): the pool's layout
        logits = (self.model.norm(x[:, -1]) @ table).float()  # (B, V)
        return logits, new_kv.to(kv_pool.dtype)
