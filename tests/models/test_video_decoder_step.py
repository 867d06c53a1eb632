"""The video decoder one latent frame at a time (streaming) against the whole-clip decode."""

import pytest
import torch

from vp.models.video_decoder_step import DecoderStep, state_layout

# the same convolutions on the same inputs, split over calls: float reassociation only
ATOL = 1e-5


def stream(step: DecoderStep, codes: torch.Tensor) -> torch.Tensor:
    """codes [B, t, h, w] -> video [B, 3, T, H, W], one latent frame per call."""
    B, t, h, w = codes.shape
    state = [torch.zeros(shape) for shape in step.state_shapes(B, h, w)]
    frames = []
    for i in range(t):
        video, *state = step(codes[:, i:i + 1], torch.tensor([i == 0]), *state)
        assert video.shape[2] == step.frames_per_step
        frames.append(video[:, :, -1:] if i == 0 else video)
    return torch.cat(frames, dim=2)


@pytest.mark.parametrize("grid", [(5, 8, 8), (3, 4, 6), (1, 8, 8)])
@torch.no_grad()
def test_stepping_equals_the_whole_clip_decode(tiny_models, grid):
    tokenizer = tiny_models.video_tokenizer
    g = torch.Generator().manual_seed(1)
    codes = torch.randint(0, tokenizer.config.codebook_size, (2, *grid), generator=g)
    whole = tokenizer.decode(codes)
    streamed = stream(DecoderStep(tokenizer), codes)
    assert streamed.shape == whole.shape
    torch.testing.assert_close(streamed, whole, rtol=0, atol=ATOL)


@torch.no_grad()
def test_the_first_flag_matters(tiny_models):
    """A later latent frame stepped as if first (its padded frames zeroed) is not what the clip decodes to:
    the flag is what keeps the first call equal to the whole-clip decoder's drop."""
    step = DecoderStep(tiny_models.video_tokenizer)
    codes = torch.randint(0, 2**10, (1, 1, 8, 8), generator=torch.Generator().manual_seed(2))
    state = [torch.zeros(s) for s in step.state_shapes(1, 8, 8)]
    first, *_ = step(codes, torch.tensor([True]), *state)
    not_first, *_ = step(codes, torch.tensor([False]), *state)
    torch.testing.assert_close(first[:, :, -1:], tiny_models.video_tokenizer.decode(codes), rtol=0, atol=ATOL)
    assert (first[:, :, -1] - not_first[:, :, -1]).abs().max() > 1e-3


def test_state_layout_and_errors(tiny_models):
    c = tiny_models.video_tokenizer.config
    layout = state_layout(c)
    assert layout[0] == (c.codebook_bits, 1)  # conv_in reads the code bits at the latent grid
    assert layout[-1][1] == c.spatial_factor  # conv_out at the frame size
    step = DecoderStep(tiny_models.video_tokenizer)
    with pytest.raises(ValueError, match=f"takes {len(layout)} state tensors, got 0"):
        step(torch.zeros(1, 1, 8, 8, dtype=torch.long), torch.tensor([True]))
