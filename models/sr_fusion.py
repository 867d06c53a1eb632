"""The super-resolution fusion: the clip's decode and the decode of the SR tokens -> output frames.

vp's addition to the paper's super-resolution, which decodes the SR stages'
tokens with the video tokenizer alone. The tokenizer spends the same code bits
on every 8x8 pixel patch at every grid, so the decode of the high-res tokens is
about as far from the truth per pixel as the clip's own decode (on the demo
world even the true 128x128 codes decoded beat a bicubic upscale of the 64x64
decode on 31% of held-out clips; docs/training.md). The fusion takes both
decodes and predicts the correction to the bicubic upscale of the clip's
decode, frame by frame, with a small CNN: the SR tokens add the detail the
low-res codes cannot hold, the upscale keeps what the clip's decode already
has right.

A preset without one (`Preset.sr_fusion` None, the paper presets) decodes the
SR tokens alone, as in the paper.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.checks import check_tensor


@dataclass(frozen=True, kw_only=True)
class SRFusionConfig:
    """width: channels of the hidden convolutions; layers: 3x3 convolutions in all (>= 2).
    scale: output / input frame size, 2^(SR stages); the preset sets it."""

    width: int = 32
    layers: int = 6
    scale: int = 2

    def __post_init__(self) -> None:
        if self.layers < 2:
            raise ValueError(f"sr_fusion needs at least 2 layers, got {self.layers}")


class SRFusion(nn.Module):
    """forward(low [B, 3, T, H, W], high [B, 3, T, sH, sW]) -> [B, 3, T, sH, sW], all RGB in [-1, 1]
    (the video decoder's output space; s = config.scale).

    low: the clip's codes decoded; high: the last SR stage's codes decoded. The output is
    bicubic(low) + CNN(bicubic(low), high), each frame on its own (receptive field
    2 * layers + 1 pixels of the output)."""

    def __init__(self, config: SRFusionConfig):
        super().__init__()
        self.config = config
        w = config.width
        convs = [nn.Conv2d(6, w, 3, padding=1), *(nn.Conv2d(w, w, 3, padding=1) for _ in range(config.layers - 2)),
                 nn.Conv2d(w, 3, 3, padding=1)]
        self.convs = nn.ModuleList(convs)

    @property
    def last(self) -> nn.Conv2d:
        """The output convolution: the correction to the bicubic upscale."""
        return self.convs[-1]

    @torch.no_grad()
    def start_at_bicubic(self) -> SRFusion:
        """Zero the output convolution, so the fusion is the bicubic upscale (training starts here)."""
        self.last.weight.zero_()
        self.last.bias.zero_()
        return self

    def forward(self, low: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        s = self.config.scale
        check_tensor("low", low, ndim=5, floating=True, shape=(None, 3, None, None, None), layout="[B, 3, T, H, W]")
        B, _, T, H, W = low.shape
        check_tensor("high", high, ndim=5, floating=True, shape=(B, 3, T, s * H, s * W), layout="[B, 3, T, sH, sW]")
        up = F.interpolate(_frames(low), scale_factor=float(s), mode="bicubic", align_corners=False)
        x = torch.cat([up, _frames(high).to(up.dtype)], dim=1)
        for conv in self.convs[:-1]:
            x = F.silu(conv(x))
        out = up + self.last(x)
        return out.view(B, T, 3, s * H, s * W).transpose(1, 2)


def _frames(video: torch.Tensor) -> torch.Tensor:
    """[B, 3, T, h, w] -> [B T, 3, h, w]: one image per frame."""
    return video.transpose(1, 2).flatten(0, 1)
