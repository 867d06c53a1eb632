"""The video decoder one latent frame at a time (streaming) against the whole-clip decode."""

import pytest
import torch

from vp.models.video_decoder_step import DecoderStep, state_layout

# the same convolutions on the same inputs, split over calls: float reassociation only
ATOL = 1e-5


def stream(tokenizer, codes: torch.Tensor) -> torch.Tensor:
    """codes [B, t, h, w] -> video [B, 3, T, H, W]: the first graph, then one step per latent frame."""
    first, step = DecoderStep(tokenizer, first=True), DecoderStep(tokenizer)
    video, *state = first(codes[:, :1])
    assert video.shape[2] == first.frames_per_step == 1
    frames = [video]
    for i in range(1, codes.shape[1]):
        video, *state = step(codes[:, i:i + 1], *state)
        assert video.shape[2] == step.frames_per_step == tokenizer.config.temporal_factor
        frames.append(video)
    return torch.cat(frames, dim=2)


@pytest.mark.parametrize("grid", [(5, 8, 8), (3, 4, 6), (1, 8, 8)])
@torch.no_grad()
def test_stepping_equals_the_whole_clip_decode(tiny_models, grid):
    tokenizer = tiny_models.video_tokenizer
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, tokenizer.config.codebook_size, (2, *grid), generator=g)
    whole = tokenizer.decode(codes)
    streamed = stream(tokenizer, codes)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=ATOL)


@torch.no_grad()
def test_the_first_frame_needs_its_own_graph(tiny_models):
    """The clip's first latent frame stepped from a zero state (every frame of its temporal upsamplings
    kept) is not what the clip decodes to: the first graph's drop of those frames is what matches it."""
    tokenizer = tiny_models.video_tokenizer
    codes = torch.randint(0, 2**10, (1, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    step = DecoderStep(tokenizer)
    first, *_ = DecoderStep(tokenizer, first=True)(codes)
    from_zeros, *_ = step(codes, *(torch.zeros(s) for s in step.state_shapes(1, 8, 8)))
    torch.testing.assert_close(first, tokenizer.decode(codes), rtol=0, atol=ATOL)
    assert (first[:, :, -1] - from_zeros[:, :, -1]).abs().max() > 1e-3


def test_state_layout_and_errors(tiny_models):
    c = tiny_models.video_tokenizer.config
    layout = state_layout(c)
    assert layout[0] == (c.codebook_bits, 1)  # conv_in reads the code bits at the latent grid
    assert layout[-1][1] == c.spatial_factor  # conv_out at the frame size
    codes = torch.zeros(1, 1, 8, 8, dtype=torch.long)
    with pytest.raises(ValueError, match=f"later-frame step takes {len(layout)} state tensors, got 0"):
        DecoderStep(tiny_models.video_tokenizer)(codes)
    with pytest.raises(ValueError, match="first-frame step takes 0 state tensors, got 1"):
        DecoderStep(tiny_models.video_tokenizer, first=True)(codes, torch.zeros(1))
