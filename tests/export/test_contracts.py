"""docs/engine-contract.md names every tensor the code declares, for every preset."""

import re
from pathlib import Path

import pytest

from vp.export.contracts import BLOCK_SIZE, contracts
from vp.models.presets import PRESETS

DOC = (Path(__file__).parents[2] / "docs" / "engine-contract.md").read_text()
HEADINGS = [line.split(" — ")[0] for line in DOC.splitlines() if line.startswith("## ")]


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_tensor_is_documented(preset):
    for name, contract in contracts(PRESETS[preset]).items():
        section = name if not name.startswith("superres_") else "superres_N"
        assert any(section in heading for heading in HEADINGS), section
        for spec in (*contract.inputs, *contract.outputs):
            # numbered tensors (state_0, ..., k_pool.0, ...) as one row
            documented = re.sub(r"\.\d+$", ".<l>", re.sub(r"_\d+$", "_i", spec.name))
            assert f"`{documented}`" in DOC, f"{name}.{spec.name}"


def test_block_size_is_documented():
    assert f"block size {BLOCK_SIZE}" in DOC.lower()


def test_profiles_cover_the_paper_layouts():
    """The prefill profile takes the longest layout; decode the CFG-batched samples."""
    c = contracts(PRESETS["paper-1b"])["llm"]
    prefill, decode = c.profiles
    assert prefill.dims["tokens"][2] == PRESETS["paper-1b"].llm.max_seq_len
    assert decode.dims["tokens"] == (1, 1, 1) and decode.dims["batch"][2] == 8


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_profile_bounds_every_tensor(preset):
    """Each profile sizes every dynamic axis of its contract's tensors, outputs included: the TensorRT
    backend allocates a CUDA-graphed context's buffers at the profile's maximum shapes."""
    for name, contract in contracts(PRESETS[preset]).items():
        for profile in contract.profiles:
            for spec in (*contract.inputs, *contract.outputs):
                unbounded = [d for d in spec.shape if not isinstance(d, int) and d not in profile.dims]
                assert not unbounded, f"{name} profile {profile.name}: {spec.name} has unbounded axes {unbounded}"
