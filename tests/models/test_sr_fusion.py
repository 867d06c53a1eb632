"""The super-resolution fusion: bicubic of the clip's decode plus a correction read from both decodes."""

import dataclasses

import pytest
import torch
import torch.nn.functional as F

from vp.models.presets import get_preset
from vp.models.sr_fusion import SRFusion, SRFusionConfig


def decodes(batch=2, frames=5, size=16, scale=2, seed=0):
    g = torch.Generator().manual_seed(seed)
    return (torch.rand(batch, 3, frames, size, size, generator=g) * 2 - 1,
            torch.rand(batch, 3, frames, scale * size, scale * size, generator=g) * 2 - 1)


@torch.no_grad()
def test_a_zeroed_output_layer_is_the_bicubic_upscale_of_each_frame():
    fusion = SRFusion(SRFusionConfig(width=8, layers=3)).start_at_bicubic()
    low, high = decodes()
    out = fusion(low, high)
    assert out.shape == high.shape
    for t in range(low.shape[2]):  # frame t of the output is frame t of the input, upscaled
        want = F.interpolate(low[:, :, t], scale_factor=2.0, mode="bicubic", align_corners=False)
        torch.testing.assert_close(out[:, :, t], want, rtol=0, atol=1e-6)


@torch.no_grad()
def test_the_output_reads_both_decodes_frame_by_frame():
    fusion = SRFusion(SRFusionConfig(width=8, layers=3))
    low, high = decodes()
    out = fusion(low, high)
    other_high = high.clone()
    other_high[:, :, 2] = 0  # frame 2 of the SR decode changed: frame 2 of the output only
    changed = (fusion(low, other_high) - out).abs().amax(dim=(0, 1, 3, 4))
    assert changed[2] > 1e-3 and torch.all(changed[[0, 1, 3, 4]] == 0)
    other_low = low.clone()
    other_low[:, :, 0] = 0
    changed = (fusion(other_low, high) - out).abs().amax(dim=(0, 1, 3, 4))
    assert changed[0] > 1e-3 and torch.all(changed[1:] == 0)


def test_mismatched_decodes_are_a_clear_error():
    fusion = SRFusion(SRFusionConfig(width=8, layers=3))
    low, high = decodes()
    with pytest.raises(ValueError, match=r"high.*\[B, 3, T, sH, sW\]"):
        fusion(low, high[..., :16, :16])
    with pytest.raises(ValueError, match="at least 2 layers"):
        SRFusionConfig(layers=1)


def test_the_fusion_scale_follows_the_stages():
    demo = get_preset("demo")
    assert demo.sr_fusion.scale == 2 and len(demo.superres) == 1
    with pytest.raises(ValueError, match=r"sr_fusion scale 4 != 2\^1"):
        dataclasses.replace(demo, sr_fusion=SRFusionConfig(scale=4))
    assert get_preset("paper-1b").sr_fusion is None  # the paper decodes the SR tokens alone
