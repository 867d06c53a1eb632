"""Presets: parameter counts against their names, geometry, the docs table."""

from pathlib import Path

import pytest

from vp.models.parameters import count_parameters, markdown_table
from vp.models.presets import PRESETS, get_preset
from vp.models.superres import PAPER_STAGE1, PAPER_STAGE2, SuperResolution

DOCS = Path(__file__).parents[2] / "docs" / "models.md"


@pytest.mark.parametrize("name,target", [("small", 100e6), ("paper-300m", 300e6), ("paper-1b", 1e9),
                                         ("paper-8b", 8e9)])
def test_llm_size_matches_the_name(name, target):
    llm = count_parameters(PRESETS[name])["llm"]
    assert abs(llm - target) / target <= 0.15, llm


def test_tiny_is_under_ten_million_parameters():
    counts = count_parameters(PRESETS["tiny"])
    trained = sum(v for k, v in counts.items() if k != "text encoder (frozen)")
    assert trained < 10e6, counts


@pytest.mark.parametrize("stage,target", [(PAPER_STAGE1, 1e9), (PAPER_STAGE2, 500e6)])
def test_paper_superres_stage_sizes(stage, target):
    import torch

    with torch.device("meta"):
        n = sum(p.numel() for p in SuperResolution(stage).parameters())
    assert abs(n - target) / target <= 0.15, n


@pytest.mark.parametrize("name", ["paper-300m", "paper-1b", "paper-8b"])
def test_paper_geometry(name):
    preset = PRESETS[name]
    g = preset.geometry
    assert (g.video_grid, g.portrait_grid, g.audio_frames) == ((5, 16, 16), (5, 28, 16), 106)
    assert preset.audio_samples == 34000
    assert 290_000 < preset.vocab.size < 310_000
    assert [s.low_res_grid for s in preset.superres] == [(5, 28, 16), (5, 56, 32)]


def test_tiny_geometry():
    g = PRESETS["tiny"].geometry
    assert (g.video_grid, g.audio_frames) == ((5, 8, 8), 106)


def test_docs_table_is_current():
    assert markdown_table() in DOCS.read_text(), "regenerate docs/models.md with vp.models.parameters.markdown_table()"


def test_unknown_preset_lists_the_known_ones():
    with pytest.raises(ValueError, match="tiny, small, paper-300m"):
        get_preset("huge")
