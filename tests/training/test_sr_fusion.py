"""The fusion stage's examples pair each clip's decodes with its own 128x128 render, and its first
step scores the bicubic upscale."""

import json
from dataclasses import replace

import numpy as np
import torch
import torch.nn.functional as F

from vp.models import load
from vp.training.measure import psnr
from vp.training.sr_fusion import SRFusionRecipe, build_pairs, train
from vp.training.world import World, WorldConfig


def test_examples_pair_decodes_with_their_render_and_step_0_is_bicubic(tmp_path):
    models = load("demo")
    world = World(WorldConfig(sample_rate=8000))
    hires = World(replace(world.config, height=128, width=128, scale=2))
    recipe = SRFusionRecipe(clips=2, steps=2, batch=4)
    pairs = dict(np.load(build_pairs(models, world, hires, recipe, tmp_path / "pairs.npz")))
    assert pairs["low"].shape == (2, 3, 17, 64, 64) and pairs["high"].shape == (2, 3, 17, 128, 128)
    assert pairs["low"].dtype == pairs["high"].dtype == np.float16 and pairs["truth"].shape == (2, 17, 128, 128, 3)
    for low, high, truth in zip(pairs["low"], pairs["high"], pairs["truth"]):
        up = F.interpolate(torch.from_numpy(low).float().transpose(0, 1), scale_factor=2.0, mode="bicubic")
        frames = ((up.permute(0, 2, 3, 1).clamp(-1, 1) + 1) * 127.5).round().byte().numpy()
        # the clip's own render: ~27 dB (its start position or another seed's clip: ~17 dB)
        assert psnr(frames, truth) > 24
        assert psnr(((high.transpose(1, 2, 3, 0).astype(np.float32).clip(-1, 1) + 1) * 127.5).round()
                    .astype(np.uint8), truth) > 20
    fusion = models.sr_fusion.start_at_bicubic().requires_grad_(True)
    train(fusion, recipe, tmp_path, pairs)
    steps = [json.loads(line) for line in (tmp_path / "sr_fusion" / "log.jsonl").read_text().splitlines()]
    assert [s["step"] for s in steps] == [0, 1]
    assert abs(steps[0]["loss"] - steps[0]["bicubic_mse"]) <= 1e-6 * steps[0]["bicubic_mse"] + 1e-9
    assert steps[0]["bicubic_mse"] < 0.05  # the upscale is close to the render: ~27 dB
