"""The super-resolution transformer: low-res latent tokens -> 2x spatial latent tokens.

As in the paper: a non-autoregressive transformer decoded MaskGIT style
(vp.runtime.masked_decoding). Blocks of three layers; each layer attends
within windows along one axis (vertical, horizontal, temporal, as the
`windows` shapes say), cross-attends to the low-res tokens of the same
window, cross-attends to the text embeddings, then runs an MLP. A code of
`codebook_bits` bits is split into `factors` (k=2) sub-codes, each embedded
and predicted by its own head, so the output is [k, 2^(bits/k)] per token
instead of 2^bits.

Conditioning dropout for classifier-free guidance: a low-res token equal to
2^bits is "no low-res" and an all-False text mask is "no text".
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from vp.models.checks import check_range, check_tensor
from vp.models.layers import LayerNorm, attend, merge_heads, split_heads

Grid = tuple[int, int, int]


@dataclass(frozen=True, kw_only=True)
class SuperResConfig:
    """low_res_grid: (t, h, w) latent grid in; the output grid doubles h and w.
    windows: the (t, h, w) attention window of the three layers of a block, in
        high-res tokens; the low-res window is half as high and half as wide.
    text_width: width of the projected text embeddings (the LLM's d_model).
    steps: masked-decoding steps; cfg_text / cfg_lowres: guidance scales (1 = off).
    """

    low_res_grid: Grid
    codebook_bits: int = 18
    factors: int = 2
    d_model: int
    n_heads: int
    n_blocks: int
    mlp_hidden: int
    windows: tuple[Grid, Grid, Grid]
    text_width: int
    max_text: int = 64
    steps: int = 24
    cfg_text: float = 4.0
    cfg_lowres: float = 1.0

    def __post_init__(self) -> None:
        if self.codebook_bits % self.factors:
            raise ValueError(f"codebook_bits {self.codebook_bits} must divide into {self.factors} factors")
        for window in self.windows:
            if any(g % w for g, w in zip(self.high_res_grid, window)) or window[1] % 2 or window[2] % 2:
                raise ValueError(f"window {window} must tile the grid {self.high_res_grid} with even h and w")

    @property
    def high_res_grid(self) -> Grid:
        t, h, w = self.low_res_grid
        return t, 2 * h, 2 * w

    @property
    def classes(self) -> int:
        """Classes per factor head: 2^(bits / factors)."""
        return 2 ** (self.codebook_bits // self.factors)

    @property
    def mask_id(self) -> int:
        """The token id of a masked (high-res) or dropped (low-res) position: 2^bits."""
        return 2**self.codebook_bits


PAPER_STAGE1 = SuperResConfig(  # 224x128 -> 448x256 portrait, ~1B parameters
    low_res_grid=(5, 28, 16), d_model=1536, n_heads=12, n_blocks=7, mlp_hidden=6144,
    windows=((1, 56, 4), (1, 8, 32), (5, 8, 8)), text_width=1536, cfg_text=4.0, cfg_lowres=1.0,
)
PAPER_STAGE2 = SuperResConfig(  # 448x256 -> 896x512, ~500M parameters
    low_res_grid=(5, 56, 32), d_model=1024, n_heads=8, n_blocks=8, mlp_hidden=4096,
    windows=((1, 112, 2), (1, 4, 64), (5, 8, 8)), text_width=1536, cfg_text=8.0, cfg_lowres=2.0,
)


def to_windows(x: torch.Tensor, window: Grid) -> torch.Tensor:
    """x [B, T, H, W, D] -> [B * windows, wt * wh * ww, D], windows in (t, h, w) order."""
    B, T, H, W, D = x.shape
    wt, wh, ww = window
    x = x.view(B, T // wt, wt, H // wh, wh, W // ww, ww, D)
    return x.permute(0, 1, 3, 5, 2, 4, 6, 7).reshape(-1, wt * wh * ww, D)


def from_windows(x: torch.Tensor, window: Grid, grid: Grid) -> torch.Tensor:
    """Inverse of to_windows: [B * windows, wt * wh * ww, D] -> [B, T, H, W, D]."""
    (T, H, W), (wt, wh, ww) = grid, window
    D = x.shape[-1]
    x = x.view(-1, T // wt, H // wh, W // ww, wt, wh, ww, D)
    return x.permute(0, 1, 4, 2, 5, 3, 6, 7).reshape(-1, T, H, W, D)


class CrossAttention(nn.Module):
    """Queries [B, T, d] attend to context [B, S, context_width] (self-attention when context is x)."""

    def __init__(self, d: int, context_width: int, heads: int):
        super().__init__()
        self.heads = heads
        self.q = nn.Linear(d, d, bias=False)
        self.kv = nn.Linear(context_width, 2 * d, bias=False)
        self.o = nn.Linear(d, d, bias=False)

    def forward(self, x: torch.Tensor, context: torch.Tensor, key_mask: torch.Tensor | None = None):
        q = split_heads(self.q(x), self.heads)
        k, v = (split_heads(t, self.heads) for t in self.kv(context).chunk(2, dim=-1))
        return self.o(merge_heads(attend(q, k, v, key_mask, scale=1 / math.sqrt(q.shape[-1]))))


class SRLayer(nn.Module):
    def __init__(self, config: SuperResConfig, window: Grid):
        super().__init__()
        d = config.d_model
        self.window = window
        self.low_window = (window[0], window[1] // 2, window[2] // 2)
        self.self_norm, self.self_attn = LayerNorm(d), CrossAttention(d, d, config.n_heads)
        self.low_norm, self.low_attn = LayerNorm(d), CrossAttention(d, d, config.n_heads)
        self.text_norm, self.text_attn = LayerNorm(d), CrossAttention(d, config.text_width, config.n_heads)
        self.mlp_norm = LayerNorm(d)
        self.mlp = nn.Sequential(nn.Linear(d, config.mlp_hidden), nn.GELU(), nn.Linear(config.mlp_hidden, d))

    def forward(self, x, low, text, text_mask):
        """x [B, T, H, W, d]; low [B, t, h, w, d] (embedded low-res tokens); text [B, L, tw]."""
        grid = tuple(x.shape[1:4])
        h = to_windows(self.self_norm(x), self.window)
        x = x + from_windows(self.self_attn(h, h), self.window, grid)
        h = to_windows(self.low_norm(x), self.window)
        x = x + from_windows(self.low_attn(h, to_windows(low, self.low_window)), self.window, grid)
        B = x.shape[0]
        h = self.text_norm(x).view(B, -1, x.shape[-1])  # (B, N, d)
        x = x + self.text_attn(h, text, text_mask).view(x.shape)
        return x + self.mlp(self.mlp_norm(x))


class GridEmbedding(nn.Module):
    """Factorized code embeddings + learned per-axis positions: codes [B, N] -> [B, T, H, W, d]."""

    def __init__(self, config: SuperResConfig, grid: Grid):
        super().__init__()
        self.grid, self.classes, self.mask_id = grid, config.classes, config.mask_id
        self.factors = nn.ModuleList(nn.Embedding(config.classes + 1, config.d_model)
                                     for _ in range(config.factors))
        self.positions = nn.ParameterList(nn.Parameter(torch.randn(n, config.d_model) * 0.02) for n in grid)

    def forward(self, codes: torch.Tensor) -> torch.Tensor:
        B = codes.shape[0]
        T, H, W = self.grid
        masked = codes == self.mask_id
        # factor j = (code // classes^j) % classes, in fp32 (exact below 2^24)
        x = 0
        for j, table in enumerate(self.factors):
            factor = torch.floor(codes.float() / self.classes**j) % self.classes
            x = x + table(torch.where(masked, self.classes, factor.long()))
        pt, ph, pw = self.positions
        pos = pt[:, None, None] + ph[None, :, None] + pw[None, None, :]  # (T, H, W, d)
        return x.view(B, T, H, W, -1) + pos.to(x.dtype)


class SuperResolution(nn.Module):
    """forward(tokens [B, N_hi] int64 in [0, 2^bits] (2^bits = masked),
    low_res [B, N_lo] int64 in [0, 2^bits] (2^bits = dropped),
    text [B, L, text_width] float, text_mask [B, L] bool)
    -> logits [B, N_hi, factors, 2^(bits/factors)] float32.

    Grids are flattened (t, h, w) row-major, as the LLM's video block.
    """

    def __init__(self, config: SuperResConfig):
        super().__init__()
        self.config = config
        self.embed = GridEmbedding(config, config.high_res_grid)
        self.embed_low = GridEmbedding(config, config.low_res_grid)
        self.layers = nn.ModuleList(SRLayer(config, window) for _ in range(config.n_blocks)
                                    for window in config.windows)
        self.norm = LayerNorm(config.d_model)
        self.heads = nn.ModuleList(nn.Linear(config.d_model, config.classes) for _ in range(config.factors))

    def forward(self, tokens, low_res, text, text_mask):
        self._check(tokens, low_res, text, text_mask)
        x = self.embed(tokens)  # (B, T, H, W, d)
        low = self.embed_low(low_res).to(x.dtype)
        text = text.to(x.dtype)
        for layer in self.layers:
            x = layer(x, low, text, text_mask)
        x = self.norm(x).flatten(1, 3)  # (B, N_hi, d)
        return torch.stack([head(x).float() for head in self.heads], dim=2)

    def _check(self, tokens, low_res, text, text_mask) -> None:
        c = self.config
        n_hi, n_lo = math.prod(c.high_res_grid), math.prod(c.low_res_grid)
        check_tensor("tokens", tokens, ndim=2, floating=False, shape=(None, n_hi), layout="[B, N_hi]")
        B = tokens.shape[0]
        check_tensor("low_res", low_res, ndim=2, floating=False, shape=(B, n_lo), layout="[B, N_lo]")
        check_tensor("text", text, ndim=3, floating=True, shape=(B, None, c.text_width), layout="[B, L, text_width]")
        check_tensor("text_mask", text_mask, ndim=2, shape=(B, text.shape[1]), layout="[B, L]")
        if text_mask.dtype != torch.bool:
            raise ValueError(f"text_mask [B, L]: expected bool, got {text_mask.dtype}")
        check_range("tokens", tokens, 0, c.mask_id + 1)
        check_range("low_res", low_res, 0, c.mask_id + 1)
