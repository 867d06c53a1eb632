"""Audio tokenizer: paper shapes (34000 samples -> 106 x 4), code ranges, lengths, bad input."""

import pytest
import torch

from vp.models import AudioTokenizer, AudioTokenizerConfig


def test_paper_config_shapes():
    config = AudioTokenizerConfig()
    assert (config.sample_rate, config.hop, config.levels, config.codebook_size) == (16000, 320, 4, 1024)
    assert config.frames(34000) == 106
    with torch.device("meta"):
        tokenizer = AudioTokenizer(config)
        codes = tokenizer.encode(torch.empty(2, 34000))
        assert codes.shape == (2, 106, 4) and codes.dtype == torch.int64
        assert tokenizer.decode(codes, num_samples=34000).shape == (2, 34000)


def test_tiny_codes_in_range_and_lengths(tiny_models):
    tok = tiny_models.audio_tokenizer
    wave = torch.rand(1, 34000, generator=torch.Generator().manual_seed(0)) * 2 - 1
    codes = tok.encode(wave)
    assert codes.shape == (1, 106, 4)
    assert 0 <= codes.min() and codes.max() < tok.config.codebook_size
    assert tok.decode(codes).shape == (1, 106 * 320)
    out = tok.decode(codes, num_samples=34000)
    assert out.shape == (1, 34000) and out.abs().max() < 1
    assert torch.equal(out[:, 33920:], torch.zeros(1, 80))  # zero-padded past the last frame
    assert tok.decode(codes, num_samples=1000).shape == (1, 1000)


def test_encoder_is_causal(tiny_models):
    tok = tiny_models.audio_tokenizer
    wave = torch.rand(1, 6400, generator=torch.Generator().manual_seed(2)) * 2 - 1
    assert torch.equal(tok.encode(wave[:, :3200]), tok.encode(wave)[:, :10])


def test_quantizer_finds_an_exact_code_vector(tiny_models):
    """A latent equal to a level-0 code vector takes that code, and the later
    levels see a zero residual (they pick their code nearest to zero)."""
    q = tiny_models.audio_tokenizer.quantizer
    z = q.codebooks[0, [7, 200, 31]][None]  # (1, 3, D)
    codes = q.quantize(z)
    assert codes[0, :, 0].tolist() == [7, 200, 31]
    nearest_zero = q.codebooks[1].pow(2).sum(-1).argmin()
    assert (codes[0, :, 1] == nearest_zero).all()


@pytest.mark.parametrize("wave,message", [
    (torch.zeros(1, 100), "at least 320"),
    (torch.zeros(1, 34000, dtype=torch.int16), "float"),
    (torch.zeros(34000), "2 dims"),
])
def test_encode_rejects_bad_wave(tiny_models, wave, message):
    with pytest.raises(ValueError, match=message):
        tiny_models.audio_tokenizer.encode(wave)


@pytest.mark.parametrize("codes,message", [
    (torch.full((1, 10, 4), 256), r"\[0, 256\)"),
    (torch.zeros(1, 10, 3, dtype=torch.long), "size 4 on axis 2"),
    (torch.zeros(1, 10, 4), "integer"),
])
def test_decode_rejects_bad_codes(tiny_models, codes, message):
    with pytest.raises(ValueError, match=message):
        tiny_models.audio_tokenizer.decode(codes)
