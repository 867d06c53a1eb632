"""The sampler graph: the host sampler's draw (vp.runtime.sampling) as a graph, run where the logits are.

On the TensorRT path the LLM's logits stay on the GPU: this graph mixes the
CFG branches, restricts them to the position's id range, and draws by the same
sort-free rejection as `vp.runtime.sampling.sample`, its DRAWS rounds
unrolled, with the uniform numbers the host's generators drew for the step.
Only the ids cross to the host. Inputs and output (the sampler contract):

    logits        float32 [R, W]   the LLM call's logits over one output head: N conditional rows,
                                   then (R = 2N, with CFG) N unconditional ones; R = N: no
                                   guidance (cfg_scale 1)
    window        int64 [2]        the range [low, high) the position may emit, in the head's columns
    uniforms      float32 [N, DRAWS]  each row's uniform numbers for the step
    config        float32 [4]      1 / temperature (0 = greedy), top_k (0 = off), top_p, cfg_scale
    ids           int64 [N]        the drawn column in [low, high); -1 where all DRAWS draws were
                                   rejected (probability <= (1 - top_p)^DRAWS), and in every row
                                   when top_k > MAX_TOP_K: the host draws those rows from their
                                   logits, with the same uniforms first

The arithmetic is the host's in float32 (the host keeps cumulative sums in
float64, and takes exp2 of log2(e)-scaled logits where this graph takes Exp,
which has no base-2 twin in ONNX: the weights differ by a few parts in 10^6):
a draw whose uniform falls within rounding of a boundary between two ids may
pick the neighbour, and a tie for the largest logit under greedy may
resolve to another of the tied ids. The window is a mask over the head's
columns, not a slice, so the graph has no data-dependent shapes.
"""

from __future__ import annotations

import torch
from torch import nn

from vp.runtime.sampling import DRAWS

MAX_TOP_K = 1024  # the top-k set comes from one TopK of this many (TensorRT's TopK takes K <= 3840)


class SamplerGraph(nn.Module):
    def forward(self, logits: torch.Tensor, window: torch.Tensor, uniforms: torch.Tensor,
                config: torch.Tensor) -> torch.Tensor:
        scale, top_k, top_p, cfg_scale = config[0], config[1], config[2], config[3]
        n = uniforms.shape[0]
        cond, uncond = logits[:n], logits[logits.shape[0] - n:]
        # the host's cfg_mix: (cond - uncond) * s + uncond in float32, cond itself at s = 1
        mixed = torch.where(cfg_scale == 1, cond, (cond - uncond) * cfg_scale + uncond)
        ids = torch.arange(cond.shape[1], device=cond.device)
        inside = (ids >= window[0]) & (ids < window[1])
        windowed = torch.where(inside, mixed, torch.full_like(mixed, float("-inf")))
        greedy = windowed.argmax(dim=1)
        scaled = windowed * torch.where(scale > 0, scale, torch.ones_like(scale))
        weights = torch.exp(scaled - scaled.amax(dim=1, keepdim=True))  # [N, V], 0 outside the window
        width = (window[1] - window[0]).to(weights.dtype)
        top_k_on = (top_k > 0) & (top_k < width)
        no_top_p = top_p >= 1
        mass = weights.sum(dim=1) * top_p  # of the whole window
        # the top-k set: the ids at least as likely as the k-th (ties kept), from the largest MAX_TOP_K
        largest = torch.topk(weights, min(MAX_TOP_K, weights.shape[1]), dim=1).values
        kth = largest[:, torch.clamp(top_k - 1, 0, largest.shape[1] - 1).to(torch.int64)][:, None]
        weights = torch.where(top_k_on & (weights < kth), torch.zeros_like(weights), weights)
        drawn = torch.full_like(greedy, -1)
        done = top_k_on & (top_k > largest.shape[1])  # beyond the TopK: left to the host
        pivot = None  # draws come from the ids with weight > pivot
        for n in range(DRAWS):
            kept = weights if pivot is None else torch.where(weights > pivot, weights, torch.zeros_like(weights))
            cumulative = torch.cumsum(kept, dim=1)
            top = cumulative[:, -1:]
            target = uniforms[:, n:n + 1] * top
            # cumulative sums never fall: the first id past the target is the count of those at most it;
            # where rounding puts the target at the top, the last id with weight (where the top is reached)
            past = (cumulative <= target).to(weights.dtype).sum(dim=1)
            last = (cumulative < top).to(weights.dtype).sum(dim=1)
            j = torch.minimum(past, last).to(torch.int64)
            weight = weights.gather(1, j[:, None])  # [N, 1]
            more = torch.where(weights > weight, weights, torch.zeros_like(weights)).sum(dim=1)
            accept = no_top_p | (more < mass)  # j is in the top-k set: only top-p can reject it
            drawn = torch.where(accept & ~done, j, drawn)
            done = done | accept
            pivot = weight
        return torch.where(scale > 0, drawn, greedy)
