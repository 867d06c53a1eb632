"""The video tokenizer: a MAGVIT-v2 style causal 3D CNN with lookup-free quantization.

Encoder: causal 3D convolutions (time padded on the left only), residual
blocks, strided downsampling: space by 2 at each of len(channel_multipliers)-1
levels (/8 for four levels), time by 2 at the last `temporal_downsamples`
levels, with causal padding so that T = 1 + 4k frames give 1 + k latent
frames (17 -> 9 -> 5) and a still image is a one-frame video (1 -> 1).

Quantization (LFQ): each latent channel is one bit (z > 0), a code is
sum_i bit_i * 2^i, so the codebook is implicit: 2^codebook_bits codes, no
lookup. Decoding maps bit i to -1 / +1.

Decoder: the mirror image; temporal upsampling is depth-to-space over time
that drops the first of the two frames made from latent frame 0 (5 -> 9 -> 17),
so that frame 0 is decoded from latent frame 0 alone.

Normalization is per frame (group norm statistics over channels and space,
never time), so the codes of frame t never depend on later frames: a video's
first latent frame equals the codes of its first frame encoded as an image.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.checks import check_range, check_tensor


@dataclass(frozen=True, kw_only=True)
class VideoTokenizerConfig:
    """codebook_bits: LFQ bits per latent position (18 in the paper: 262,144 codes).
    channel_multipliers: encoder width per level, times base_channels.
    temporal_downsamples: how many of the downsampling levels also halve time.
    """

    codebook_bits: int = 18
    base_channels: int = 128
    channel_multipliers: tuple[int, ...] = (1, 2, 2, 4)
    res_blocks: int = 2
    temporal_downsamples: int = 2

    def __post_init__(self) -> None:
        if not 0 <= self.temporal_downsamples < len(self.channel_multipliers):
            raise ValueError("temporal_downsamples must be below the number of levels")

    @property
    def spatial_factor(self) -> int:
        return 2 ** (len(self.channel_multipliers) - 1)

    @property
    def temporal_factor(self) -> int:
        return 2**self.temporal_downsamples

    @property
    def codebook_size(self) -> int:
        return 2**self.codebook_bits

    def temporal_stride(self, level: int) -> int:
        """Time stride of the downsampling after encoder level `level` (the last levels halve time)."""
        return 2 if level >= len(self.channel_multipliers) - 1 - self.temporal_downsamples else 1

    def latent_shape(self, frames: int, height: int, width: int) -> tuple[int, int, int]:
        """(t, h, w) of the codes of a frames x height x width video."""
        f, s = self.temporal_factor, self.spatial_factor
        if frames < 1 or (frames - 1) % f:
            raise ValueError(f"video frames must be 1 + {f}k (1, {1 + f}, {1 + 2 * f}, ...), got {frames}")
        if height % s or width % s or height <= 0 or width <= 0:
            raise ValueError(f"video height and width must be positive multiples of {s}, got {height}x{width}")
        return 1 + (frames - 1) // f, height // s, width // s


class FrameNorm(nn.Module):
    """Group norm with statistics per frame, computed in fp32: x [B, C, T, H, W]."""

    def __init__(self, channels: int):
        super().__init__()
        self.norm = nn.GroupNorm(min(32, channels // 4) or 1, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        frames = x.transpose(1, 2).reshape(B * T, C, H, W).float()  # (B*T, C, H, W)
        frames = F.group_norm(frames, self.norm.num_groups, self.norm.weight.float(), self.norm.bias.float(),
                              self.norm.eps)
        return frames.to(x.dtype).reshape(B, T, C, H, W).transpose(1, 2)


class CausalConv3d(nn.Module):
    """3D convolution that sees only the current and earlier frames.

    Time is padded with kernel - 1 zero frames on the left, so T frames give
    1 + (T - 1) // stride frames; space is padded symmetrically.
    """

    def __init__(self, cin: int, cout: int, kernel: int = 3, stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__()
        self.time_pad = kernel - 1
        self.space_pad = (kernel - 1) // 2
        self.conv = nn.Conv3d(cin, cout, kernel, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        p = self.space_pad
        return self.conv(F.pad(x, (p, p, p, p, self.time_pad, 0)))


class ResBlock(nn.Module):
    def __init__(self, cin: int, cout: int):
        super().__init__()
        self.norm1, self.conv1 = FrameNorm(cin), CausalConv3d(cin, cout)
        self.norm2, self.conv2 = FrameNorm(cout), CausalConv3d(cout, cout)
        self.skip = nn.Conv3d(cin, cout, 1) if cin != cout else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)))
        h = self.conv2(F.silu(self.norm2(h)))
        return self.skip(x) + h


class Upsample(nn.Module):
    """Space x2 (and time x2 when `temporal`) by a convolution and depth-to-space.

    Time: latent frame 0 yields one frame, every later one two (T -> 2T - 1).
    """

    def __init__(self, channels: int, temporal: bool):
        super().__init__()
        self.t = 2 if temporal else 1
        self.conv = CausalConv3d(channels, channels * 4 * self.t)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape
        y = self.conv(x).view(B, C, self.t, 2, 2, T, H, W)
        y = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, C, T * self.t, 2 * H, 2 * W)  # (B, C, tT, 2H, 2W)
        return y[:, :, self.t - 1:]


class Encoder(nn.Module):
    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_multipliers]
        self.conv_in = CausalConv3d(3, widths[0])
        layers: list[nn.Module] = []
        cin = widths[0]
        for level, width in enumerate(widths):
            for _ in range(config.res_blocks):
                layers.append(ResBlock(cin, width))
                cin = width
            if level < len(widths) - 1:
                layers.append(CausalConv3d(cin, cin, stride=(config.temporal_stride(level), 2, 2)))
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameNorm(cin)
        self.conv_out = CausalConv3d(cin, config.codebook_bits, kernel=1)

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        """video [B, 3, T, H, W] -> z [B, bits, t, h, w]."""
        return self.conv_out(F.silu(self.norm_out(self.layers(self.conv_in(video)))))


class Decoder(nn.Module):
    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        widths = [config.base_channels * m for m in config.channel_multipliers]
        cin = widths[-1]
        self.conv_in = CausalConv3d(config.codebook_bits, cin)
        layers: list[nn.Module] = []
        for level in reversed(range(len(widths))):
            for _ in range(config.res_blocks):
                layers.append(ResBlock(cin, widths[level]))
                cin = widths[level]
            if level > 0:
                layers.append(Upsample(cin, temporal=config.temporal_stride(level - 1) == 2))
        self.layers = nn.Sequential(*layers)
        self.norm_out = FrameNorm(cin)
        self.conv_out = CausalConv3d(cin, 3)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, bits, t, h, w] in {-1, +1} -> video [B, 3, T, H, W]."""
        return self.conv_out(F.silu(self.norm_out(self.layers(self.conv_in(z)))))


class VideoTokenizer(nn.Module):
    """encode(video [B, 3, T, H, W] float in [-1, 1]) -> codes [B, t, h, w] int64 in [0, 2^bits);
    decode(codes) -> video [B, 3, T, H, W] float in [-1, 1]."""

    def __init__(self, config: VideoTokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)
        self.register_buffer("bit_values", 2.0 ** torch.arange(config.codebook_bits), persistent=False)

    def encode(self, video: torch.Tensor) -> torch.Tensor:
        check_tensor("video", video, ndim=5, floating=True, layout="[B, 3, T, H, W]")
        if video.shape[1] != 3:
            raise ValueError(f"video [B, 3, T, H, W]: expected 3 channels (RGB), got shape {tuple(video.shape)}")
        self.config.latent_shape(*video.shape[2:])
        z = self.encoder(video)  # (B, bits, t, h, w)
        bits = (z > 0).float()
        # the sum of distinct powers of two below 2^24 is exact in fp32
        codes = torch.einsum("bkthw,k->bthw", bits, self.bit_values.float())
        return codes.round().long()

    def decode(self, codes: torch.Tensor) -> torch.Tensor:
        return self.decoder(self.code_bits(codes)).clamp(-1, 1)

    def code_bits(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, t, h, w] -> the decoder's input z [B, bits, t, h, w] in {-1, +1}."""
        check_tensor("codes", codes, ndim=4, floating=False, layout="[B, t, h, w]")
        check_range("codes", codes, 0, self.config.codebook_size)
        # bit i of each code -> -1 / +1; codes < 2^24 are exact in fp32
        powers = self.bit_values.view(1, -1, 1, 1, 1).to(torch.float32)
        bits = torch.floor(codes[:, None].float() / powers) % 2  # (B, bits, t, h, w)
        return (bits * 2 - 1).to(self.decoder.conv_in.conv.weight.dtype)
