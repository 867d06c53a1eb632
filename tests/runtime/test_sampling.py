"""Sampling: range restriction, greedy, top-k, top-p, CFG and seeded determinism."""

import numpy as np
import pytest

from vp.runtime.sampling import SamplingConfig, cfg_mix, make_rng, sample

GREEDY = SamplingConfig(temperature=0, top_p=1.0)
PLAIN = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0)


def test_greedy_stays_inside_the_range():
    logits = np.array([[9.0, 1.0, 3.0, 2.0, 8.0]])
    assert sample(logits, low=1, high=4, config=GREEDY, rng=make_rng(0))[0] == 2


def test_draws_follow_the_softmax():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]] * 20000))
    ids = sample(logits, low=0, high=4, config=PLAIN, rng=make_rng(1))
    freq = np.bincount(ids, minlength=4) / len(ids)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_temperature_sharpens():
    logits = np.log(np.array([[0.25, 0.75]] * 20000))
    ids = sample(logits, low=0, high=2, config=SamplingConfig(temperature=0.5, top_p=1.0), rng=make_rng(2))
    # p ∝ p^(1/T): 0.75^2 / (0.75^2 + 0.25^2) = 0.9
    assert abs(ids.mean() - 0.9) < 0.01


def test_top_k_and_top_p_cut_the_tail():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]] * 5000))
    top_k = sample(logits, low=0, high=4, config=SamplingConfig(top_k=2, top_p=1.0), rng=make_rng(3))
    assert set(top_k) == {1, 3}
    # nucleus 0.75: 0.5 + 0.3 reach it, 0.15 and 0.05 are cut
    top_p = sample(logits, low=0, high=4, config=SamplingConfig(top_p=0.75), rng=make_rng(3))
    assert set(top_p) == {1, 3}
    np.testing.assert_allclose(np.mean(top_p == 1), 0.5 / 0.8, atol=0.03)


def test_seeded_runs_are_identical_and_seeds_differ():
    logits = np.random.default_rng(0).normal(size=(64, 100))
    a = sample(logits, low=0, high=100, config=PLAIN, rng=make_rng(7))
    b = sample(logits, low=0, high=100, config=PLAIN, rng=make_rng(7))
    c = sample(logits, low=0, high=100, config=PLAIN, rng=make_rng(8))
    np.testing.assert_array_equal(a, b)
    assert (a != c).any()


def test_cfg_mix():
    cond, uncond = np.array([[1.0, 2.0]]), np.array([[0.5, 3.0]])
    np.testing.assert_allclose(cfg_mix(cond, uncond, 3.0), [[2.0, 0.0]])
    np.testing.assert_allclose(cfg_mix(cond, uncond, 1.0), cond)


@pytest.mark.parametrize("kwargs, message", [
    (dict(temperature=-1), "temperature"), (dict(top_k=-2), "top_k"), (dict(top_p=0.0), "top_p"),
    (dict(cfg_scale=-1), "cfg_scale"),
])
def test_bad_config(kwargs, message):
    with pytest.raises(ValueError, match=message):
        SamplingConfig(**kwargs)


def test_bad_range():
    with pytest.raises(ValueError, match="does not fit"):
        sample(np.zeros((1, 4)), low=2, high=9, config=GREEDY, rng=make_rng(0))


def test_partial_top_p_equals_a_full_stable_sort():
    """The head-only sort keeps exactly the ids a stable sort of all ids keeps, ties included."""
    from vp.runtime.sampling import _outside_top_p

    rng = np.random.default_rng(1)
    for _ in range(300):
        n = int(rng.integers(2, 3000))
        logits = np.round(rng.normal(size=n) * rng.choice([0.1, 1, 5, 20]), int(rng.integers(0, 3)))  # ties
        p = np.exp(logits - logits.max())
        p /= p.sum()
        for top_p in (0.1, 0.5, 0.9, 0.99):
            order = np.argsort(-p, kind="stable")
            before = np.cumsum(p[order]) - p[order]
            want = np.zeros(n, bool)
            want[order] = before >= top_p
            np.testing.assert_array_equal(_outside_top_p(p, top_p, head=int(rng.integers(1, 64))), want)
