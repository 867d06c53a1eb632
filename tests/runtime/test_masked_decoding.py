"""MaskGIT decoding: schedule, determinism, guidance (numpy only)."""

import numpy as np
import pytest

from vp.runtime.masked_decoding import guided_logits, masked_decode


def peaked(target, factors, classes):
    """A logits_fn that puts almost all mass on `target` [B, N] codes; records each call's input."""
    calls = []
    digits = np.stack([(target // classes**j) % classes for j in range(factors)], -1)  # (B, N, k)

    def fn(tokens):
        calls.append(tokens.copy())
        logits = np.zeros((*target.shape, factors, classes))
        np.put_along_axis(logits, digits[..., None], 20.0, -1)
        return logits

    return fn, calls


def test_decodes_the_predicted_codes_with_a_cosine_schedule():
    rng = np.random.default_rng(0)
    target = rng.integers(0, 1024, (2, 100))
    fn, calls = peaked(target, 2, 32)
    codes = masked_decode(fn, num_tokens=100, factors=2, classes=32, steps=8, rng=np.random.default_rng(1), batch=2)
    np.testing.assert_array_equal(codes, target)
    masked = [int((c == 1024).sum(-1)[0]) for c in calls]
    expected = [100] + [int(np.floor(100 * np.cos(np.pi / 2 * s / 8))) for s in range(1, 8)]
    assert masked == expected


def test_seeded_and_deterministic():
    logits = np.random.default_rng(3).normal(size=(1, 64, 2, 16))

    def run(seed):
        return masked_decode(lambda t: logits, num_tokens=64, factors=2, classes=16, steps=6,
                             rng=np.random.default_rng(seed))

    np.testing.assert_array_equal(run(5), run(5))
    assert not np.array_equal(run(5), run(6))
    assert run(5).max() < 256 and run(5).min() >= 0


def test_known_tokens_are_never_remasked():
    logits = np.random.default_rng(4).normal(size=(1, 50, 2, 8))
    history = []

    def fn(tokens):
        history.append(tokens.copy())
        return logits

    masked_decode(fn, num_tokens=50, factors=2, classes=8, steps=5, rng=np.random.default_rng(0))
    for before, after in zip(history, history[1:]):
        known = before != 64
        np.testing.assert_array_equal(after[known], before[known])


def test_guided_logits():
    full, no_text, no_low = np.full(3, 2.0), np.full(3, 1.0), np.full(3, 0.5)
    np.testing.assert_allclose(guided_logits(full, no_text, no_low, cfg_text=4.0, cfg_lowres=2.0),
                               2 + 3 * 1 + 1 * 1.5)
    np.testing.assert_allclose(guided_logits(full, no_text, None, cfg_text=4.0, cfg_lowres=1.0), 5.0)
    with pytest.raises(ValueError, match="no_lowres"):
        guided_logits(full, no_text, None, cfg_text=4.0, cfg_lowres=2.0)


def test_bad_logits_shape_is_reported():
    with pytest.raises(ValueError, match="expected"):
        masked_decode(lambda t: np.zeros((1, 10, 2)), num_tokens=10, factors=2, classes=4, steps=2,
                      rng=np.random.default_rng(0))
