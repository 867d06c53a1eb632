"""Calibration data: real task layouts, reproducible, two disjoint splits, clear errors."""

import numpy as np
import pytest

from vp.calibration.data import TASKS, CalibrationConfig, calibration_set


def test_sequences_are_the_pipeline_task_layouts(tiny_calibration, tiny_models):
    vocab = tiny_models.preset.vocab
    assert [s.task for s in tiny_calibration.calibration] == [t.value for t in TASKS]
    for s in tiny_calibration.calibration + tiny_calibration.held_out:
        assert s.ids.dtype == np.int64 and s.ids.min() >= 0 and s.ids.max() < vocab.size
        sampled = s.high > 0
        assert not sampled[:s.prefix_len].any(), "no position of the prefix is sampled"
        assert sampled[s.prefix_len:].sum() > 0
        # every sampled id lies in the range its position may emit
        assert ((s.ids >= s.low) & (s.ids < s.high))[sampled].all()
        assert s.embeds.shape == (len(s.ids), tiny_models.preset.llm.d_model)
        assert not s.embed_mask[s.prefix_len:].any()
        text = s.task not in ("uncond", "v2a")
        assert s.embed_mask.any() == text
        assert (np.abs(s.embeds[s.embed_mask]).sum(-1) > 0).all()


def test_splits_are_disjoint_and_reproducible(tiny_calibration, tiny_models):
    cal = {s.ids.tobytes() for s in tiny_calibration.calibration}
    assert not cal & {s.ids.tobytes() for s in tiny_calibration.held_out}
    again = calibration_set(tiny_models, CalibrationConfig(sequences=9, held_out=4))
    assert again.fingerprint() == tiny_calibration.fingerprint()
    described = tiny_calibration.describe()
    assert described["sequences"] == 9 and described["held_out"] == 4 and described["source"] == "world"


def test_too_small_a_set_is_refused(tiny_models):
    with pytest.raises(ValueError, match="too small: INT8 needs at least 8 calibration and 4 held-out"):
        calibration_set(tiny_models, CalibrationConfig(sequences=4, held_out=4))


def test_a_preset_without_a_source_is_refused(tiny_models):
    import dataclasses

    models = dataclasses.replace(tiny_models, preset=dataclasses.replace(tiny_models.preset, calibration=None))
    with pytest.raises(ValueError, match="has no calibration data source.*export tiny at --precision fp16"):
        calibration_set(models, CalibrationConfig())
