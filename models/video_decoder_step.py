"""The video decoder one latent frame at a time, for streaming.

The decoder is causal (vp.models.video_tokenizer): every convolution looks
kernel - 1 = 2 frames back, normalization is per frame, so latent frame t
decodes from latent frames <= t. Its receptive field spans more latent frames
than a clip has, so a causal window would be the whole clip again; instead each
convolution carries its state, the last 2 frames of its input, from one call to
the next. A call decodes one latent frame into `frames_per_step` frames (4 for
the paper's tokenizer), and the frames of all calls equal the whole-clip decode.

The first latent frame is special: the whole-clip decoder makes one frame of it
(each temporal upsampling drops the first of the two frames latent frame 0
gives). A step keeps its shapes fixed instead (so an engine has no data-dependent
shape): on the first call the frames that the whole-clip decoder drops are
zeroed before every convolution, exactly as the causal zero padding they stand
for, and of the call's output only the last frame is real. The caller keeps the
last frame of the first call and every frame of the others.
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
    """forward(codes [B, 1, h, w] int64, first [1] bool, *state) -> (video [B, 3, F, H, W], *state).

    state: one tensor per convolution of the decoder, in the order they run,
    [B, C, 2, h * scale, w * scale] (that convolution's last two input frames;
    C and scale from `state_layout`), zeros before the first call.
    F = frames_per_step (the tokenizer's temporal factor).
    """

    def __init__(self, tokenizer: VideoTokenizer):
        super().__init__()
        self.tokenizer = tokenizer
        self.decoder = tokenizer.decoder
        self.layout = state_layout(tokenizer.config)
        convs = [m for m in self.decoder.modules() if isinstance(m, CausalConv3d) and m.time_pad]
        if [c.conv.in_channels for c in convs] != [channels for channels, _ in self.layout]:
            raise RuntimeError("state_layout no longer follows the video decoder's convolutions")
        self.frames_per_step = tokenizer.config.temporal_factor

    def state_shapes(self, batch: int, latent_height: int, latent_width: int) -> list[tuple[int, ...]]:
        """The shape of each state tensor for codes of latent_height x latent_width."""
        return [(batch, c, 2, latent_height * s, latent_width * s) for c, s in self.layout]

    def forward(self, codes: torch.Tensor, first: torch.Tensor, *state: torch.Tensor):
        if len(state) != len(self.layout):
            raise ValueError(f"the decoder step takes {len(self.layout)} state tensors, got {len(state)}")
        d = self.decoder
        state = list(state)
        new_state: list[torch.Tensor] = []
        x = self.tokenizer.code_bits(codes)  # (B, bits, 1, h, w)
        padded = 0  # leading frames of x that the whole-clip decoder drops on the first call

        def conv(module: CausalConv3d, x: torch.Tensor) -> torch.Tensor:
            if padded:  # zero them, as the causal padding they stand for (first call only)
                keep = (torch.arange(x.shape[2], device=x.device) >= padded) | ~first
                x = x * keep.to(x.dtype)[None, None, :, None, None]
            window = torch.cat([state.pop(0), x], dim=2)  # (B, C, 2 + T, H, W)
            new_state.append(window[:, :, -module.time_pad:])
            # space padded by the convolution itself: a separate pad would copy the window once more
            p = module.space_pad
            return F.conv3d(window, module.conv.weight, module.conv.bias, module.conv.stride, (0, p, p))

        x = conv(d.conv_in, x)
        for module in d.layers:
            if isinstance(module, ResBlock):
                h = conv(module.conv1, F.silu(module.norm1(x)))
                x = module.skip(x) + conv(module.conv2, F.silu(module.norm2(h)))
            else:  # Upsample, without the whole-clip drop: each frame gives module.t frames
                B, C, T, H, W = x.shape
                y = conv(module.conv, x).view(B, C, module.t, 2, 2, T, H, W)
                x = y.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(B, C, T * module.t, 2 * H, 2 * W)
                padded = padded * module.t + module.t - 1
        video = conv(d.conv_out, F.silu(d.norm_out(x))).clamp(-1, 1)
        return (video, *new_state)
