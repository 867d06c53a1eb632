"""The demo preset's shipped weights: they load and do what docs/training.md says."""

import numpy as np
import torch
from safetensors.torch import load_file

from vp.models.audio_tokenizer import AudioTokenizer
from vp.models.checkpoint import shipped_weights
from vp.models.presets import get_preset
from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.conditioning import frames_from_model, video_to_model
from vp.training.measure import measure, pitch, psnr
from vp.training.world import HELD_OUT_SEED, PITCH_HZ, World, WorldConfig

PRESET = get_preset("demo")
WORLD = World(WorldConfig(sample_rate=PRESET.audio_tokenizer.sample_rate))


def _load(module, name):
    module.load_state_dict(load_file(str(shipped_weights(PRESET) / f"{name}.safetensors")))
    return module.eval()


@torch.no_grad()
def test_video_tokenizer_reconstructs_held_out_clips():
    model = _load(VideoTokenizer(PRESET.video_tokenizer), "video_tokenizer")
    for i in range(3):
        clip = WORLD.clip(HELD_OUT_SEED + i)
        codes = model.encode(torch.from_numpy(video_to_model(clip.frames)))
        assert codes.shape == (1, 5, 8, 8)
        recon = frames_from_model(model.decode(codes)[0].numpy())
        assert psnr(recon, clip.frames) > 24.0  # 25.97 dB mean over 32 clips (docs/training.md)
        m = measure(recon, None, WORLD.config.sample_rate)
        assert (m.colour, m.direction) == (clip.attributes.colour, clip.attributes.direction)


@torch.no_grad()
def test_audio_tokenizer_keeps_the_pitch():
    model = _load(AudioTokenizer(PRESET.audio_tokenizer), "audio_tokenizer")
    clips = [WORLD.clip(HELD_OUT_SEED + i) for i in range(6)]
    waves = torch.from_numpy(np.stack([c.audio for c in clips]))
    codes = model.encode(waves)
    assert codes.shape == (6, 53, 4)
    decoded = model.decode(codes, num_samples=waves.shape[1]).numpy()
    for clip, wave in zip(clips, decoded):
        truth = PITCH_HZ[clip.attributes.shape]
        assert abs(pitch(wave, WORLD.config.sample_rate) - truth) / truth < 0.03
        assert np.abs(wave).mean() > 0.1  # audible: the tone is 0.3 peak (mean |x| ~0.19)
