"""The audio tokenizer: a SoundStream style causal 1D CNN with residual vector quantization.

Encoder: a causal convolution, then per stride (2, 4, 5, 8 -> hop 320 at
16 kHz, 50 frames per second) residual units with dilations 1, 3, 9 and a
strided downsampling convolution doubling the width; a final convolution to
the latent dimension. Residual VQ with `levels` codebooks of `codebook_size`
codes each: level l quantizes what levels 0..l-1 left over.

Decoder: the mirror image with transposed convolutions; the output passes
through tanh so that the waveform lies in (-1, 1).

Lengths: N samples give N // hop frames (a trailing partial frame is dropped);
F frames decode to F * hop samples, zero-padded or trimmed to `num_samples`
when given (34000 samples = 2.125 s -> 106 frames -> 33920 samples -> 34000).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.checks import check_range, check_tensor


@dataclass(frozen=True, kw_only=True)
class AudioTokenizerConfig:
    sample_rate: int = 16000
    strides: tuple[int, ...] = (2, 4, 5, 8)
    base_channels: int = 32
    latent_dim: int = 64
    levels: int = 4
    codebook_size: int = 1024
    res_blocks: int = 1

    @property
    def hop(self) -> int:
        """Samples per frame (320 in the paper: 50 frames per second)."""
        return math.prod(self.strides)

    def frames(self, num_samples: int) -> int:
        """Frames of a num_samples waveform; ValueError when shorter than one frame."""
        if num_samples < self.hop:
            raise ValueError(f"audio must hold at least {self.hop} samples (one frame), got {num_samples}")
        return num_samples // self.hop


class CausalConv1d(nn.Module):
    """1D convolution over past and present samples only.

    Left padding dilation * (kernel - 1) + 1 - stride makes L samples give
    L / stride outputs (L a multiple of stride).
    """

    def __init__(self, cin: int, cout: int, kernel: int, stride: int = 1, dilation: int = 1):
        super().__init__()
        self.pad = dilation * (kernel - 1) + 1 - stride
        self.conv = nn.Conv1d(cin, cout, kernel, stride=stride, dilation=dilation)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(F.pad(x, (self.pad, 0)))


class ResidualUnit(nn.Module):
    def __init__(self, channels: int, dilation: int):
        super().__init__()
        self.conv = CausalConv1d(channels, channels, 7, dilation=dilation)
        self.proj = nn.Conv1d(channels, channels, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.proj(F.elu(self.conv(F.elu(x))))


def _residual_units(channels: int, count: int) -> list[nn.Module]:
    return [ResidualUnit(channels, dilation) for _ in range(count) for dilation in (1, 3, 9)]


class Encoder(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        width = config.base_channels
        layers: list[nn.Module] = [CausalConv1d(1, width, 7)]
        for stride in config.strides:
            layers += _residual_units(width, config.res_blocks)
            layers += [nn.ELU(), CausalConv1d(width, 2 * width, 2 * stride, stride=stride)]
            width *= 2
        layers += [nn.ELU(), CausalConv1d(width, config.latent_dim, 3)]
        self.layers = nn.Sequential(*layers)

    def forward(self, wave: torch.Tensor) -> torch.Tensor:
        """wave [B, 1, N] (N a multiple of hop) -> z [B, latent_dim, N / hop]."""
        return self.layers(wave)


class Upsample1d(nn.Module):
    """Transposed convolution by `stride`, trimmed on the right so L frames give L * stride."""

    def __init__(self, cin: int, cout: int, stride: int):
        super().__init__()
        self.stride = stride
        self.conv = nn.ConvTranspose1d(cin, cout, 2 * stride, stride=stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)[..., :-self.stride]


class Decoder(nn.Module):
    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        width = config.base_channels * 2 ** len(config.strides)
        layers: list[nn.Module] = [CausalConv1d(config.latent_dim, width, 7)]
        for stride in reversed(config.strides):
            layers += [nn.ELU(), Upsample1d(width, width // 2, stride)]
            width //= 2
            layers += _residual_units(width, config.res_blocks)
        layers += [nn.ELU(), CausalConv1d(width, 1, 7)]
        self.layers = nn.Sequential(*layers)

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, latent_dim, F] -> wave [B, 1, F * hop] in (-1, 1)."""
        return torch.tanh(self.layers(z))


class ResidualVQ(nn.Module):
    """`levels` codebooks [levels, codebook_size, latent_dim]; distances in fp32."""

    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.codebooks = nn.Parameter(torch.randn(config.levels, config.codebook_size, config.latent_dim))

    def quantize(self, z: torch.Tensor) -> torch.Tensor:
        """z [B, F, D] -> codes [B, F, levels] int64."""
        residual = z.float()
        codes = []
        for book in self.codebooks.float():  # book: (K, D)
            dist = (residual.pow(2).sum(-1, keepdim=True) - 2 * residual @ book.T
                    + book.pow(2).sum(-1))  # (B, F, K)
            index = dist.argmin(-1)  # (B, F)
            residual = residual - F.embedding(index, book)
            codes.append(index)
        return torch.stack(codes, dim=-1)

    def dequantize(self, codes: torch.Tensor) -> torch.Tensor:
        """codes [B, F, levels] -> z [B, F, D]: the sum of each level's code vector."""
        return sum(F.embedding(codes[..., level], book) for level, book in enumerate(self.codebooks))


class AudioTokenizer(nn.Module):
    """encode(wave [B, N] float in [-1, 1]) -> codes [B, N // hop, levels] int64;
    decode(codes, num_samples=None) -> wave [B, frames * hop or num_samples] float."""

    def __init__(self, config: AudioTokenizerConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.quantizer = ResidualVQ(config)
        self.decoder = Decoder(config)

    def encode(self, wave: torch.Tensor) -> torch.Tensor:
        check_tensor("wave", wave, ndim=2, floating=True, layout="[B, N]")
        frames = self.config.frames(wave.shape[1])
        z = self.encoder(wave[:, None, :frames * self.config.hop])  # (B, D, F)
        return self.quantizer.quantize(z.transpose(1, 2))

    def decode(self, codes: torch.Tensor, num_samples: int | None = None) -> torch.Tensor:
        c = self.config
        check_tensor("audio codes", codes, ndim=3, floating=False, shape=(None, None, c.levels),
                     layout="[B, frames, levels]")
        check_range("audio codes", codes, 0, c.codebook_size)
        z = self.quantizer.dequantize(codes).transpose(1, 2)  # (B, D, F)
        wave = self.decoder(z.to(self.quantizer.codebooks.dtype))[:, 0]  # (B, F * hop)
        if num_samples is None:
            return wave
        if num_samples <= wave.shape[1]:
            return wave[:, :num_samples]
        return F.pad(wave, (0, num_samples - wave.shape[1]))
