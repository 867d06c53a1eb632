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
    kv_pool:      [num_blocks, block_size, layers, 2, kv_heads, head_dim] float
    block_table:  [B, max_blocks] int64   pool block of each logical block
    context_lens: [B] int64      tokens already in the pool (positions 0..context_len-1)
    prefix_lens:  [B] int64      bidirectional prefix length (prefix-LM mask)
    ->
    logits:       [B, V] float32 of the last new position
    new_kv:       [B, T, layers, 2, kv_heads, head_dim] K (rotated) and V of the new positions
    """

    def __init__(self, model: PrefixLM):
        super().__init__()
        self.model = model

    def forward(self, input_ids, input_embeds, embed_mask, position_ids, kv_pool, block_table,
                context_lens, prefix_lens):
        c = self.model.config
        B, T = input_ids.shape
        block_size = kv_pool.shape[1]
        past = kv_pool[block_table]  # (B, max_blocks, block_size, L, 2, KVH, hd)
        past = past.reshape(B, -1, c.n_layers, 2, c.n_kv_heads, c.head_dim)  # (B, S, L, 2, KVH, hd)
        S = block_table.shape[1] * block_size
        past_pos = torch.arange(S, device=input_ids.device)[None].expand(B, S)
        k_pos = torch.cat([past_pos, position_ids], dim=1)  # (B, S + T)
        k_valid = torch.cat([past_pos < context_lens[:, None], torch.ones_like(position_ids, dtype=torch.bool)], 1)
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
            past_k = past[:, :, layer, 0].transpose(1, 2).to(x.dtype)  # (B, KVH, S, hd)
            past_v = past[:, :, layer, 1].transpose(1, 2).to(x.dtype)
            x, k, v = block(x, cos, sin, mask, past_k, past_v)
            new.append(torch.stack([k, v], dim=2))  # (B, KVH, 2, T, hd)
        new_kv = torch.stack(new, dim=1).permute(0, 4, 1, 3, 2, 5)  # (B, T, L, 2, KVH, hd)
        logits = (self.model.norm(x[:, -1]) @ table).float()  # (B, V)
        return logits, new_kv.to(kv_pool.dtype)
