"""The video decoder one latent frame at a time, for streaming.

The decoder is causal (vp.models.video_tokenizer): every convolution looks
kernel - 1 = 2 frames back, normalization is per frame, so latent frame t
decodes from latent frames <= t. Its receptive field spans more latent frames
than a clip has, so a causal window would be the whole clip again; instead each
convolution carries its state, the last 2 frames of its input, from one call to
the next, and the frames of all calls equal the whole-clip decode.

Two graphs, both with fixed shapes (an engine has no data-dependent shape):
- the first latent frame (`first=True`): no state in, zeros stand for it as
  the causal padding they are; each temporal upsampling drops the frames the
  whole-clip decoder drops of latent frame 0, so the call computes the one
  frame that is kept, at every level, and returns the state;
- every later latent frame: the state in, `frames_per_step` frames out (4 for
  the paper's tokenizer), the next state out.

One graph with a runtime `first` flag would have to compute the dropped frames
and zero them (fixed shapes): the top level's convolutions ran on 20 frames for
a 17-frame clip, and the stream cost 1.35x one whole-clip decode
(docs/benchmarks.md).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from vp.models.video_tokenizer import CausalConv3d, ResBlock, VideoTokenizer, VideoTokenizerConfig


def state_layout(config: VideoTokenizerConfig) -> list[tuple[int, int]]:
    """(channels, spatial scale over the latent grid) of each decoder convolution's state, in the
    order the convolutions run (vp.models.video_tokenizer.Decoder's structure)."""
    widths = [config.base_channels * m for m in config.channel_multipliers]
    cin, scale = config.codebook_bits, 1
    layout = [(cin, scale)]  # conv_in
    cin = widths[-1]
    for level in reversed(range(len(widths))):
        for _ in range(config.res_blocks):
            layout += [(cin, scale), (widths[level], scale)]  # conv1, conv2
            cin = widths[level]
        if level > 0:
            layout.append((cin, scale))  # the upsampling convolution
            scale *= 2
    return layout + [(cin, scale)]  # conv_out


class DecoderStep(nn.Module):
    """One latent frame through the video decoder, each convolution's state carried.

    first=False: forward(codes [B, 1, h, w] int64, *state) -> (video [B, 3, F, H, W], *next_state)
    first=True:  forward(codes [B, 1, h, w] int64) -> (video [B, 3, 1, H, W], *next_state)

    state: one tensor per convolution of the decoder, in the order they run,
    [B, C, 2, h * scale, w * scale] (that convolution's last two input frames;
    C and scale from `state_layout`). F = frames_per_step (the tokenizer's
    temporal factor).
    """

    def __init__(self, tokenizer: VideoTokenizer, *, first: bool = False):
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = tokenizer.decoder
        self.first = first
        self.layout = state_layout(tokenizer.config)
        convs = [m for m in self.decoder.modules() if isinstance(m, CausalConv3d) and m.time_pad]
        if [c.conv.in_channels for c in convs] != [channels for channels, _ in self.layout]:
            raise RuntimeError("state_layout no longer follows the video decoder's convolutions")
        self.frames_per_step = 1 if first else tokenizer.config.temporal_factor

    def state_shapes(self, batch: int, latent_height: int, latent_width: int) -> list[tuple[int, ...]]:
        """The shape of each state tensor for codes of latent_height x latent_width."""
        return [(batch, c, 2, latent_height * s, latent_width * s) for c, s in self.layout]

    def forward(self, codes: torch.Tensor, *state: torch.Tensor):
        expected = 0 if self.first else len(self.layout)
        if len(state) != expected:
            raise ValueError(f"the decoder's {'first' if self.first else 'later'}-frame step takes {expected} "
                             f"state tensors, got {len(state)}")
        d = self.decoder
        state = list(state)
        new_state: list[torch.Tensor] = []

        def conv(module: CausalConv3d, x: torch.Tensor) -> torch.Tensor:
            # the first frame's past is the causal zero padding; a later frame's is the carried state
            if self.first:
                window = F.pad(x, (0, 0, 0, 0, module.time_pad, 0))  # (B, C, 2 + T, H, W)
            else:
                window = torch.cat([state.pop(0), x], dim=2)
            new_state.append(window[:, :, -module.time_pad:])
            # space padded by the convolution itself: a separate pad would copy the window once more
            p = module.space_pad
            return F.conv3d(window, module.conv.weight, module.conv.bias, module.conv.stride, (0, p, p))

        x = conv(d.conv_in, self.tokenizer.code_bits(codes))  # code bits (B, bits, 1, h, w)
        for module in d.layers:
            if isinstance(module, ResBlock):
                h = conv(module.conv1, F.silu(module.norm1(x)))
                x = module.skip(x) + conv(module.conv2, F.silu(module.norm2(h)))
            else:  # Upsample: each frame gives module.t frames; of latent frame 0's, the last is kept
                B, C, T, H, W = x.shape
                y = conv(module.conv, x).view(B, C, module.t, 2, 2, T, H, W)
                x = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, C, T * module.t, 2 * H, 2 * W)
                if self.first:
                    x = x[:, :, module.t - 1:]
        video = conv(d.conv_out, F.silu(d.norm_out(x))).clamp(-1, 1)
        return (video, *new_state)
