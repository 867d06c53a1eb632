"""Activation statistics: the three clip rules on known histograms, and the observed tensors."""

import numpy as np
import pytest
import torch

from vp.calibration.statistics import HEAD, channel_max, mse_clip, observed, percentile_clip, tensor_scales


def test_percentile_clip_reads_the_histogram():
    histogram = np.zeros(100)
    histogram[:99] = 1  # 99 values spread over [0, 0.99)
    histogram[99] = 1  # one outlier in the last bin
    assert percentile_clip(histogram, top=10.0, percentile=99.0) == pytest.approx(9.9)
    assert percentile_clip(histogram, top=10.0, percentile=100.0) == pytest.approx(10.0)


def test_mse_clip_keeps_a_uniform_range_and_clips_a_lone_outlier():
    uniform = np.ones(2048)
    assert mse_clip(uniform, top=1.0) == pytest.approx(1.0)
    tail = np.zeros(2048)
    tail[:64] = 1e6  # the mass near zero, one value at the top
    tail[-1] = 1
    assert mse_clip(tail, top=1.0) < 0.2


def test_statistics_cover_every_weight_matmul(tiny_models, tiny_calibration):
    model = tiny_models.llm
    names = set(observed(model))
    assert HEAD in names and len(names) == 7 * model.config.n_layers + 1
    peaks = channel_max(model, tiny_calibration.calibration[:2])
    assert set(peaks) == names
    assert peaks["blocks.0.mlp.w_down"].shape == (model.config.mlp_hidden,)
    scales = {s: tensor_scales(model, tiny_calibration.calibration[:2], s) for s in ("max", "percentile", "mse")}
    for name in names:
        assert scales["max"][name] == pytest.approx(float(peaks[name].max()) / 127, rel=1e-6)
        assert 0 < scales["percentile"][name] <= scales["max"][name] * (1 + 1e-6)
        assert 0 < scales["mse"][name] <= scales["max"][name] * (1 + 1e-6)
    with pytest.raises(ValueError, match="unknown calibration statistic 'kl'"):
        tensor_scales(model, tiny_calibration.calibration[:1], "kl")


def test_smoothquant_keeps_the_float_model_and_flattens_activations(tiny_models, tiny_calibration):
    import copy

    from vp.calibration.smoothquant import smooth

    model = tiny_models.llm
    smoothed = copy.deepcopy(model)
    data = tiny_calibration.calibration[:3]
    before = channel_max(model, data)
    smooth(smoothed, before, alpha=0.5)
    s = data[0]
    args = (torch.from_numpy(s.ids)[None], torch.tensor([s.prefix_len]), torch.from_numpy(s.embeds)[None],
            torch.from_numpy(s.embed_mask)[None])
    with torch.no_grad():
        torch.testing.assert_close(smoothed(*args), model(*args), rtol=1e-4, atol=1e-4)
    after = channel_max(smoothed, data)
    for name in ("blocks.0.attn.wq", "blocks.0.mlp.w_gate", "blocks.0.mlp.w_down"):
        spread = lambda m: float(m.max() / m.clamp(min=1e-6).median())  # noqa: E731
        assert spread(after[name]) < spread(before[name])
    with pytest.raises(ValueError, match="alpha must be in"):
        smooth(copy.deepcopy(model), before, alpha=1.5)
