"""Sampling: range restriction, greedy, top-k, top-p, CFG and seeded determinism."""

import numpy as np
import pytest

from vp.runtime.sampling import SamplingConfig, SamplingDefaults, cfg_mix, make_rng, sample, sample_guided
from vp.runtime.vocab import Task

GREEDY = SamplingConfig(temperature=0, top_p=1.0)
PLAIN = SamplingConfig(temperature=1.0, top_p=1.0, top_k=0)


def rngs(seed, logits):
    """One generator per row, as the runtime gives each sample its own."""
    return [make_rng(seed * 100_000 + i) for i in range(len(logits))]


def test_greedy_stays_inside_the_range():
    logits = np.array([[9.0, 1.0, 3.0, 2.0, 8.0]])
    assert sample(logits, low=1, high=4, config=GREEDY, rngs=rngs(0, logits))[0] == 2


def test_draws_follow_the_softmax():
    logits = np.log(np.array([[0.1, 0.2, 0.3, 0.4]] * 20000))
    ids = sample(logits, low=0, high=4, config=PLAIN, rngs=rngs(1, logits))
    freq = np.bincount(ids, minlength=4) / len(ids)
    np.testing.assert_allclose(freq, [0.1, 0.2, 0.3, 0.4], atol=0.015)


def test_temperature_sharpens():
    logits = np.log(np.array([[0.25, 0.75]] * 20000))
    ids = sample(logits, low=0, high=2, config=SamplingConfig(temperature=0.5, top_p=1.0), rngs=rngs(2, logits))
    # p ∝ p^(1/T): 0.75^2 / (0.75^2 + 0.25^2) = 0.9
    assert abs(ids.mean() - 0.9) < 0.01


def test_top_k_and_top_p_cut_the_tail():
    logits = np.log(np.array([[0.05, 0.5, 0.15, 0.3]] * 5000))
    top_k = sample(logits, low=0, high=4, config=SamplingConfig(top_k=2, top_p=1.0), rngs=rngs(3, logits))
    assert set(top_k) == {1, 3}
    # nucleus 0.75: 0.5 + 0.3 reach it, 0.15 and 0.05 are cut
    top_p = sample(logits, low=0, high=4, config=SamplingConfig(top_p=0.75), rngs=rngs(3, logits))
    assert set(top_p) == {1, 3}
    np.testing.assert_allclose(np.mean(top_p == 1), 0.5 / 0.8, atol=0.03)


def test_seeded_runs_are_identical_and_seeds_differ():
    logits = np.random.default_rng(0).normal(size=(64, 100))
    a = sample(logits, low=0, high=100, config=PLAIN, rngs=rngs(7, logits))
    b = sample(logits, low=0, high=100, config=PLAIN, rngs=rngs(7, logits))
    c = sample(logits, low=0, high=100, config=PLAIN, rngs=rngs(8, logits))
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
        sample(np.zeros((1, 4)), low=2, high=9, config=GREEDY, rngs=[make_rng(0)])
    with pytest.raises(ValueError, match="2 rows of logits need as many generators, got 1"):
        sample(np.zeros((2, 4)), low=0, high=4, config=PLAIN, rngs=[make_rng(0)])




def kept_set(p: np.ndarray, top_k: int, top_p: float) -> np.ndarray:
    """[W] bool, by the definition: fewer than top_k ids more likely, and less than top_p of the mass
    on the ids more likely (written with a full sort, as a reference for the sort-free sampler)."""
    order = np.argsort(-p, kind="stable")
    sorted_p = p[order]
    above = np.searchsorted(-sorted_p, -p, side="left")  # ids strictly more likely than each id
    mass_above = np.concatenate([[0.0], np.cumsum(sorted_p)])[above]
    keep = mass_above < top_p * p.sum()
    if top_k:
        keep &= above < top_k
    return keep


@pytest.mark.parametrize("top_k, top_p", [(0, 0.9), (0, 0.5), (40, 1.0), (40, 0.9)])
@pytest.mark.parametrize("shape", ["flat", "peaked"])
def test_the_sort_free_draw_follows_the_truncated_softmax(top_k, top_p, shape):
    """Over 2,500 ids (three blocks of the draw), draws land in the kept set only, with the kept
    ids' renormalized probabilities: the total variation from them of 6,000 draws is within 1.15x
    (+ 0.01) of what 6,000 exact multinomial draws of the same distribution show."""
    gen = np.random.default_rng(5)
    logits = gen.normal(size=2500) * (0.3 if shape == "flat" else 3.0)
    p = np.exp(logits - logits.max())
    keep = kept_set(p, top_k, top_p)
    rows = np.repeat(logits[None], 6000, axis=0)
    ids = sample(rows, low=0, high=2500, config=SamplingConfig(top_k=top_k, top_p=top_p), rngs=rngs(11, rows))
    assert keep[ids].all()
    want = np.where(keep, p, 0) / p[keep].sum()
    freq = np.bincount(ids, minlength=2500) / len(ids)
    exact = np.random.default_rng(0).multinomial(len(ids), want) / len(ids)
    assert 0.5 * np.abs(freq - want).sum() < 1.15 * 0.5 * np.abs(exact - want).sum() + 0.01


def test_top_k_keeps_ids_tied_at_the_boundary():
    logits = np.log(np.array([[0.4, 0.2, 0.2, 0.1, 0.1]] * 3000))
    ids = sample(logits, low=0, high=5, config=SamplingConfig(top_k=2, top_p=1.0), rngs=rngs(4, logits))
    assert set(ids) == {0, 1, 2}


def test_rows_draw_as_if_alone():
    """Row i depends on its own logits and generator only: a step's rows drawn together give the
    ids each sample would draw by itself (the reference draws one sample at a time)."""
    logits = np.random.default_rng(2).normal(size=(6, 3000)).astype(np.float32) * 2
    config = SamplingConfig(temperature=0.8, top_k=100, top_p=0.7)
    together = sample(logits, low=100, high=2900, config=config, rngs=rngs(9, logits))
    alone = [sample(logits[i:i + 1], low=100, high=2900, config=config, rngs=[rngs(9, logits)[i]])[0] for i in range(6)]
    np.testing.assert_array_equal(together, alone)
    assert ((together >= 100) & (together < 2900)).all()


def test_guided_sampling_mixes_the_window_only():
    gen = np.random.default_rng(3)
    cond, uncond = gen.normal(size=(4, 500)), gen.normal(size=(4, 500))
    config = SamplingConfig(top_p=0.8, cfg_scale=2.5)
    ids = sample_guided(cond, uncond, low=200, high=450, config=config, rngs=rngs(6, cond))
    want = sample(cfg_mix(cond, uncond, 2.5), low=200, high=450, config=config, rngs=rngs(6, cond))
    np.testing.assert_array_equal(ids, want)
    plain = sample_guided(cond, None, low=200, high=450, config=config, rngs=rngs(6, cond))
    np.testing.assert_array_equal(plain, sample(cond, low=200, high=450, config=config, rngs=rngs(6, cond)))


def test_task_defaults_override_the_base_for_their_task_only():
    defaults = SamplingDefaults(SamplingConfig(temperature=0.0, cfg_scale=3.0), {"stylize": {"cfg_scale": 1.0}})
    assert defaults.for_task("stylize") == SamplingConfig(temperature=0.0, cfg_scale=1.0)
    assert defaults.for_task(Task.STYLIZATION) == defaults.for_task("stylize")
    assert defaults.for_task("t2v") == SamplingConfig(temperature=0.0, cfg_scale=3.0)
    assert not defaults.for_task("stylize").guided and defaults.for_task("t2v").guided


def test_task_defaults_round_trip_through_the_manifest_form():
    defaults = SamplingDefaults(SamplingConfig(top_k=8), {"v2a": {"temperature": 0.5}, "i2v": {"top_p": 0.8}})
    body = defaults.to_dict()
    assert body == {"temperature": 1.0, "top_k": 8, "top_p": 0.9, "cfg_scale": 3.0,
                    "tasks": {"i2v": {"top_p": 0.8}, "v2a": {"temperature": 0.5}}}
    assert SamplingDefaults.from_dict(body) == defaults
    assert SamplingDefaults.from_dict({"temperature": 0.0}) == SamplingDefaults(SamplingConfig(temperature=0.0))


@pytest.mark.parametrize("tasks, message", [
    ({"text2video": {"top_k": 1}}, r"unknown task\(s\) \['text2video'\]"),
    ({"t2v": {"topk": 1}}, r"t2v has unknown keys \['topk'\]"),
    ({"t2v": {"temperature": -1}}, r"t2v: temperature must be >= 0"),
])
def test_bad_task_defaults(tasks, message):
    with pytest.raises(ValueError, match=message):
        SamplingDefaults(SamplingConfig(), tasks)
