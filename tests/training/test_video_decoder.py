"""The decoder stage's batches: dataset codes paired with the pixels they encode."""

from dataclasses import replace

import numpy as np
import torch
from safetensors.torch import load_file

from vp.models.checkpoint import shipped_weights
from vp.models.presets import get_preset
from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.conditioning import frames_from_model, video_to_model
from vp.training.measure import psnr
from vp.training.tokens import TokenRecipe
from vp.training.video_decoder import VideoDecoderRecipe, batch, losses
from vp.training.world import World, WorldConfig

PRESET = get_preset("demo")


@torch.no_grad()
def test_batches_pair_codes_with_their_pixels():
    """Rows of a small token dataset (encoded here as `vp-train tokens` does); every batch item, a
    whole clip or a window of a 128x128 render's grid, decodes close to the frames it is paired with
    (a window cut at the wrong place, or a clip of another seed, would not)."""
    model = VideoTokenizer(PRESET.video_tokenizer)
    model.load_state_dict(load_file(str(shipped_weights(PRESET) / "video_tokenizer.safetensors")))
    model.eval()
    world = World(WorldConfig(sample_rate=8000))
    hires = World(replace(world.config, height=128, width=128, scale=2))
    seed0 = TokenRecipe().seed * 10_000_000
    clips = [world.clip(seed0 + row) for row in range(2)]
    encode = lambda frames: model.encode(torch.from_numpy(video_to_model(frames)))[0].numpy()  # noqa: E731
    data = {"video": np.stack([encode(c.frames) for c in clips]),
            "hires": np.stack([encode(hires.render(clips[0].attributes, seed=seed0).frames),
                               np.full((5, 16, 16), -1)])}
    recipe = VideoDecoderRecipe(batch=6, hires_share=0.5)
    codes, video = batch(recipe, 0, data, world, hires)
    assert codes.shape == (6, 5, 8, 8) and video.shape == (6, 3, 17, 64, 64)
    whole = [any(np.array_equal(c, v) for v in data["video"]) for c in codes.numpy()]
    assert 0 < sum(whole) < 6  # both kinds drawn
    for item in range(6):
        recon = frames_from_model(model.decode(codes[item:item + 1])[0].numpy())
        assert psnr(recon, frames_from_model(video[item].numpy())) > 20.0, item
    assert 0 < float(losses(model, codes, video, recipe)["mse"]) < 0.02
