"""PyTorch reference models of vp: the ground truth every engine is checked against.

    from vp.models import load
    models = load("tiny")                      # seeded random weights
    from vp.models.reference import generate
    result = generate(models, task="t2v", prompt="a red fox", seed=0)
"""

from vp.models.audio_tokenizer import AudioTokenizer, AudioTokenizerConfig
from vp.models.checkpoint import Models, build, load, save
from vp.models.prefix_lm import PrefixLM, PrefixLMConfig
from vp.models.presets import PRESETS, Preset, get_preset
from vp.models.superres import SuperResConfig, SuperResolution
from vp.models.text_encoder import TextEncoder, TextEncoderConfig
from vp.models.video_tokenizer import VideoTokenizer, VideoTokenizerConfig

__all__ = [
    "AudioTokenizer", "AudioTokenizerConfig", "Models", "build", "load", "save", "PrefixLM", "PrefixLMConfig",
    "PRESETS", "Preset", "get_preset", "SuperResConfig", "SuperResolution", "TextEncoder", "TextEncoderConfig",
    "VideoTokenizer", "VideoTokenizerConfig",
]
