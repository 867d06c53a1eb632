"""Video tokenizer: paper shapes, code ranges, causality, round trip shapes, bad input."""

import pytest
import torch

from vp.models import VideoTokenizer, VideoTokenizerConfig


@pytest.mark.parametrize("frames,height,width,latent", [
    (17, 128, 128, (5, 16, 16)),   # the paper's clip
    (17, 224, 128, (5, 28, 16)),   # portrait, H x W
    (1, 128, 128, (1, 16, 16)),    # a still image is a one-frame video
])
def test_paper_config_shapes(frames, height, width, latent):
    config = VideoTokenizerConfig()
    assert config.latent_shape(frames, height, width) == latent
    assert config.codebook_size == 2**18
    with torch.device("meta"):  # the 169M-parameter paper tokenizer, shapes only
        tokenizer = VideoTokenizer(config)
        codes = tokenizer.encode(torch.empty(1, 3, frames, height, width))
        assert codes.shape == (1, *latent) and codes.dtype == torch.int64
        assert tokenizer.decode(codes).shape == (1, 3, frames, height, width)


def test_tiny_codes_in_range_and_decode_shape(tiny_models):
    tok = tiny_models.video_tokenizer
    video = torch.rand(2, 3, 17, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = tok.encode(video)
    assert codes.shape == (2, 5, 8, 8)
    assert 0 <= codes.min() and codes.max() < tok.config.codebook_size
    assert len(codes.unique()) > 50  # random init still spreads over the codebook
    out = tok.decode(codes)
    assert out.shape == video.shape and out.abs().max() <= 1


def test_encoder_and_decoder_are_causal(tiny_models):
    """The first latent frame depends on frame 0 only; frame 0 decodes from latent frame 0 only."""
    tok = tiny_models.video_tokenizer
    video = torch.rand(1, 3, 17, 64, 64, generator=torch.Generator().manual_seed(1)) * 2 - 1
    codes = tok.encode(video)
    assert torch.equal(tok.encode(video[:, :, :1])[:, 0], codes[:, 0])
    assert torch.equal(tok.encode(video[:, :, :9]), codes[:, :3])
    changed = video.clone()
    changed[:, :, 5:] = -changed[:, :, 5:]
    assert torch.equal(tok.encode(changed)[:, :2], codes[:, :2])  # frames 0-4 -> latent frames 0-1
    frames = tok.decode(codes)
    torch.testing.assert_close(tok.decode(codes[:, :1])[:, :, 0], frames[:, :, 0], rtol=0, atol=1e-5)


@pytest.mark.parametrize("video,message", [
    (torch.zeros(1, 3, 16, 64, 64), r"1 \+ 4k"),
    (torch.zeros(1, 4, 17, 64, 64), "3 channels"),
    (torch.zeros(1, 3, 17, 64, 64, dtype=torch.uint8), "float"),
    (torch.zeros(3, 17, 64, 64), "5 dims"),
    (torch.zeros(1, 3, 17, 60, 64), "multiples of 8"),
    ("not a tensor", "torch.Tensor"),
])
def test_encode_rejects_bad_video(tiny_models, video, message):
    with pytest.raises(ValueError, match=message):
        tiny_models.video_tokenizer.encode(video)


@pytest.mark.parametrize("codes,message", [
    (torch.full((1, 5, 8, 8), 1024), r"\[0, 1024\)"),
    (torch.full((1, 5, 8, 8), -1), r"\[0, 1024\)"),
    (torch.zeros(1, 5, 8, 8), "integer"),
    (torch.zeros(5, 8, 8, dtype=torch.long), "4 dims"),
])
def test_decode_rejects_bad_codes(tiny_models, codes, message):
    with pytest.raises(ValueError, match=message):
        tiny_models.video_tokenizer.decode(codes)
