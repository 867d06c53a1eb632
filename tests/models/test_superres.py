"""Super-resolution transformer: shapes of the tiny and paper stages, windows, guidance conditions, bad input."""

import math

import pytest
import torch

from vp.models import SuperResolution
from vp.models.superres import PAPER_STAGE1, PAPER_STAGE2, from_windows, to_windows


def inputs(config, batch=2, text_len=5, seed=0):
    g = torch.Generator().manual_seed(seed)
    n_hi, n_lo = math.prod(config.high_res_grid), math.prod(config.low_res_grid)
    return (torch.randint(0, config.mask_id + 1, (batch, n_hi), generator=g),
            torch.randint(0, config.mask_id, (batch, n_lo), generator=g),
            torch.randn(batch, text_len, config.text_width, generator=g),
            torch.ones(batch, text_len, dtype=torch.bool))


@pytest.mark.parametrize("stage,low,high", [(PAPER_STAGE1, (5, 28, 16), (5, 56, 32)),
                                            (PAPER_STAGE2, (5, 56, 32), (5, 112, 64))])
def test_paper_stage_shapes(stage, low, high):
    assert stage.low_res_grid == low and stage.high_res_grid == high
    assert stage.factors == 2 and stage.classes == 2**9
    with torch.device("meta"):
        model = SuperResolution(stage)
        logits = model(*inputs(stage, batch=1))
    assert logits.shape == (1, math.prod(high), 2, 512) and logits.dtype == torch.float32


def test_tiny_stage_logits(tiny_models):
    sr = tiny_models.superres[0]
    logits = sr(*inputs(sr.config))
    assert logits.shape == (2, 5 * 16 * 16, 2, 32)
    assert torch.isfinite(logits).all()


def test_windows_round_trip():
    x = torch.arange(2 * 5 * 16 * 16 * 3).view(2, 5, 16, 16, 3)
    for window in [(1, 16, 2), (1, 2, 16), (5, 4, 4)]:
        w = to_windows(x, window)
        assert w.shape == (2 * 5 * 16 * 16 // math.prod(window), math.prod(window), 3)
        assert torch.equal(from_windows(w, window, (5, 16, 16)), x)
    # a window holds one temporal column of 5 frames x 4 x 4 positions
    w = to_windows(x, (5, 4, 4))
    assert torch.equal(w[0, :16], x[0, 0, :4, :4].reshape(16, 3))


@torch.no_grad()
def test_no_text_branch_ignores_the_text(tiny_models):
    """An all-False text mask (CFG's no-text branch) gives finite logits independent of the text values."""
    sr = tiny_models.superres[0]
    tokens, low, text, mask = inputs(sr.config)
    mask[:] = False
    a = sr(tokens, low, text, mask)
    b = sr(tokens, low, torch.randn_like(text), mask)
    assert torch.isfinite(a).all()
    torch.testing.assert_close(a, b, rtol=0, atol=0)
    assert not torch.allclose(a, sr(tokens, low, text, ~mask))  # with text, the text matters


@torch.no_grad()
def test_windowed_attention_keeps_frames_apart_until_the_temporal_layer(tiny_models):
    """Changing the tokens of frame 4 changes frame 0's logits only through the (5, 4, 4) layer:
    the output of the whole block must change (it has a temporal layer)."""
    sr = tiny_models.superres[0]
    tokens, low, text, mask = inputs(sr.config)
    changed = tokens.clone()
    changed[:, 4 * 256:] = sr.config.mask_id
    a, b = sr(tokens, low, text, mask), sr(changed, low, text, mask)
    assert not torch.allclose(a[:, :256], b[:, :256])


@pytest.mark.parametrize("which,value,message", [
    (0, lambda c: torch.full((1, 1280), c.mask_id + 1), "tokens"),
    (0, lambda c: torch.zeros(1, 1279, dtype=torch.long), "size 1280"),
    (1, lambda c: torch.full((1, 320), -1), "low_res"),
    (3, lambda c: torch.ones(1, 5), "bool"),
])
def test_bad_input(tiny_models, which, value, message):
    sr = tiny_models.superres[0]
    args = list(inputs(sr.config, batch=1))
    args[which] = value(sr.config)
    with pytest.raises(ValueError, match=message):
        sr(*args)
