"""Named presets: one frozen dataclass of component configs per model size.

The paper (PAPER.md) fixes the tokenizers, the vocabulary, the task layouts and
the super-resolution structure; it leaves the LLM's layers, width, heads and
context open. vp's choices for those:

| preset      | d_model | layers | heads (kv) | mlp    | why                                      |
|-------------|---------|--------|------------|--------|------------------------------------------|
| paper-300m  | 768     | 12     | 6 (6)      | 1536   | 230M of 300M sit in the tied ~299k vocab |
| paper-1b    | 1536    | 20     | 12 (12)    | 4096   | head_dim 128 throughout                  |
| paper-8b    | 4096    | 32     | 32 (8)     | 14336  | GQA keeps the KV cache edge-sized        |

Input and output embeddings are tied (the paper's ~300k vocabulary would
otherwise double the embedding share). Context: 6144 tokens, above the longest
paper layout (portrait audio-video continuation, ~5.4k). The text word range of
the vocabulary is 32768 ids, so the paper vocabulary is 256 + 2^18 + 4*1024 +
32768 = 299,264 ids (~300k, as in the paper). The text encoder of every preset
is the bundled all-MiniLM-L6-v2 (the paper's T5 XL cannot be downloaded here);
a faithful config swaps in a local T5 folder with
`dataclasses.replace(preset, text_encoder=TextEncoderConfig(source=PATH, width=...))`.

`demo` is the one preset with trained weights (shipped in models/weights/demo,
trained by `vp-train` on the procedural world of vp.training.world): 17
frames of 64x64 at 8 fps, 12-bit visual codes, audio at 8 kHz (the world's
tones lie below 1 kHz) in 4 x 256 codes, a ~5M-parameter LLM, one
super-resolution stage to 128x128.

`tiny` (under 10M parameters in tokenizers + LLM + super-resolution, 17 frames
of 64x64, 10-bit visual codes, 4 x 256 audio codes) is for CI and demos;
`small` (a ~100M LLM over 14-bit visual codes at the paper's 128x128) is for
CPU benchmarks.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from vp.models.audio_tokenizer import AudioTokenizerConfig
from vp.models.prefix_lm import PrefixLMConfig
from vp.models.sr_fusion import SRFusionConfig
from vp.models.superres import PAPER_STAGE1, PAPER_STAGE2, SuperResConfig
from vp.models.text_encoder import TextEncoderConfig
from vp.models.video_tokenizer import VideoTokenizerConfig
from vp.runtime.sampling import SamplingConfig, SamplingDefaults
from vp.runtime.layout import ClipGeometry
from vp.runtime.vocab import SPECIAL_RANGE, Vocabulary


@dataclass(frozen=True, kw_only=True)
class ClipConfig:
    """The clip a preset generates: 17 frames at 8 fps = 2.125 s (paper).

    portrait: (height, width) of the portrait clip marked with <res>, or None.
    """

    frames: int = 17
    height: int = 128
    width: int = 128
    fps: int = 8
    portrait: tuple[int, int] | None = (224, 128)

    @property
    def seconds(self) -> float:
        return self.frames / self.fps


@dataclass(frozen=True, kw_only=True)
class Preset:
    name: str
    clip: ClipConfig
    video_tokenizer: VideoTokenizerConfig
    audio_tokenizer: AudioTokenizerConfig
    text_encoder: TextEncoderConfig
    llm: PrefixLMConfig
    superres: tuple[SuperResConfig, ...]
    sampling: SamplingDefaults
    # the fusion of the SR tokens' decode with the clip's (vp.models.sr_fusion); None: the SR
    # tokens' decode alone, as in the paper
    sr_fusion: SRFusionConfig | None = None
    text_words: int = 0
    weights: str | None = None  # folder of shipped weights, relative to the vp.models package
    # INT8's calibration data source (vp.calibration.data): "world" = the procedural world through
    # the preset's own tokenizers; None where no source runs at this size on the export machine
    calibration: str | None = "world"

    def __post_init__(self) -> None:
        if self.llm.vocab_size != self.vocab.size:
            raise ValueError(f"preset {self.name}: LLM vocab_size {self.llm.vocab_size} != vocabulary size {self.vocab.size}")
        if self.text_encoder.width != self.llm.d_model:
            raise ValueError(f"preset {self.name}: text projection width must equal the LLM d_model")
        if self.sr_fusion and self.sr_fusion.scale != 2 ** len(self.superres):
            raise ValueError(f"preset {self.name}: sr_fusion scale {self.sr_fusion.scale} != 2^{len(self.superres)} "
                             "(one doubling per super-resolution stage)")

    @property
    def vocab(self) -> Vocabulary:
        return Vocabulary(
            visual_codes=self.video_tokenizer.codebook_size,
            audio_levels=self.audio_tokenizer.levels,
            audio_codes=self.audio_tokenizer.codebook_size,
            text_words=self.text_words,
        )

    @property
    def audio_samples(self) -> int:
        """Samples of one clip's audio (34000 = 2.125 s at 16 kHz)."""
        return round(self.clip.seconds * self.audio_tokenizer.sample_rate)

    @property
    def geometry(self) -> ClipGeometry:
        c, vt = self.clip, self.video_tokenizer
        return ClipGeometry(
            video_grid=vt.latent_shape(c.frames, c.height, c.width),
            portrait_grid=vt.latent_shape(c.frames, *c.portrait) if c.portrait else None,
            audio_frames=self.audio_tokenizer.frames(self.audio_samples),
        )

    def to_dict(self) -> dict:
        """JSON-ready config (what manifests and weight folders store); sampling in its manifest form."""
        return {**dataclasses.asdict(self), "sampling": self.sampling.to_dict()}


def _vocab_size(visual_bits: int, audio: AudioTokenizerConfig, text_words: int) -> int:
    return SPECIAL_RANGE + 2**visual_bits + audio.levels * audio.codebook_size + text_words


_PAPER_AUDIO = AudioTokenizerConfig()
_PAPER_TEXT_WORDS = 32768
_PAPER_VOCAB = _vocab_size(18, _PAPER_AUDIO, _PAPER_TEXT_WORDS)


def _paper(name: str, llm: PrefixLMConfig) -> Preset:
    width = llm.d_model
    return Preset(
        name=name,
        clip=ClipConfig(),
        video_tokenizer=VideoTokenizerConfig(),
        audio_tokenizer=_PAPER_AUDIO,
        text_encoder=TextEncoderConfig(width=width),
        llm=llm,
        superres=(dataclasses.replace(PAPER_STAGE1, text_width=width),
                  dataclasses.replace(PAPER_STAGE2, text_width=width)),
        sampling=SamplingDefaults(),
        text_words=_PAPER_TEXT_WORDS,
        calibration=None,  # a 300M-8B random init, whose held-out gate alone would take hours on a CPU
    )


def _tiny() -> Preset:
    audio = AudioTokenizerConfig(base_channels=8, latent_dim=32, codebook_size=256)
    llm = PrefixLMConfig(vocab_size=_vocab_size(10, audio, 0), d_model=128, n_layers=4, n_heads=4,
                         n_kv_heads=2, mlp_hidden=384, max_seq_len=2048)
    return Preset(
        name="tiny",
        clip=ClipConfig(height=64, width=64, portrait=(112, 64)),
        video_tokenizer=VideoTokenizerConfig(codebook_bits=10, base_channels=16, res_blocks=1),
        audio_tokenizer=audio,
        text_encoder=TextEncoderConfig(width=128),
        llm=llm,
        superres=(SuperResConfig(low_res_grid=(5, 8, 8), codebook_bits=10, factors=2, d_model=64, n_heads=4,
                                 n_blocks=1, mlp_hidden=128, windows=((1, 16, 2), (1, 2, 16), (5, 4, 4)),
                                 text_width=128, steps=8, cfg_text=4.0, cfg_lowres=1.0),),
        sr_fusion=SRFusionConfig(width=8, layers=3),
        sampling=SamplingDefaults(),
    )


def _demo() -> Preset:
    audio = AudioTokenizerConfig(sample_rate=8000, base_channels=8, latent_dim=32, codebook_size=256)
    llm = PrefixLMConfig(vocab_size=_vocab_size(12, audio, 0), d_model=256, n_layers=6, n_heads=8,
                         n_kv_heads=4, mlp_hidden=768, max_seq_len=1024)
    return Preset(
        name="demo",
        clip=ClipConfig(height=64, width=64, portrait=None),
        video_tokenizer=VideoTokenizerConfig(codebook_bits=12, base_channels=16, res_blocks=1),
        audio_tokenizer=audio,
        text_encoder=TextEncoderConfig(width=256),
        llm=llm,
        superres=(SuperResConfig(low_res_grid=(5, 8, 8), codebook_bits=12, factors=2, d_model=128, n_heads=4,
                                 n_blocks=2, mlp_hidden=256, windows=((1, 16, 2), (1, 2, 16), (5, 4, 4)),
                                 text_width=256, steps=8, cfg_text=1.0, cfg_lowres=1.0),),
        sr_fusion=SRFusionConfig(width=32, layers=6),
        # greedy with guidance, and stylization without it: the evaluator's best on its tuning split
        # (docs/training.md); --temperature 1 for variety
        sampling=SamplingDefaults(SamplingConfig(temperature=0.0, cfg_scale=3.0), {"stylize": {"cfg_scale": 1.0}}),
        weights="weights/demo",
    )


def _small() -> Preset:
    audio = AudioTokenizerConfig(base_channels=16)
    llm = PrefixLMConfig(vocab_size=_vocab_size(14, audio, 0), d_model=768, n_layers=12, n_heads=12,
                         n_kv_heads=4, mlp_hidden=2048, max_seq_len=4096)
    return Preset(
        name="small",
        clip=ClipConfig(),
        video_tokenizer=VideoTokenizerConfig(codebook_bits=14, base_channels=32, res_blocks=1),
        audio_tokenizer=audio,
        text_encoder=TextEncoderConfig(width=768),
        llm=llm,
        superres=(SuperResConfig(low_res_grid=(5, 16, 16), codebook_bits=14, factors=2, d_model=256, n_heads=4,
                                 n_blocks=2, mlp_hidden=768, windows=((1, 32, 4), (1, 4, 32), (5, 8, 8)),
                                 text_width=768, steps=12, cfg_text=4.0, cfg_lowres=1.0),),
        sampling=SamplingDefaults(),
    )


PRESETS: dict[str, Preset] = {
    "demo": _demo(),
    "tiny": _tiny(),
    "small": _small(),
    "paper-300m": _paper("paper-300m", PrefixLMConfig(
        vocab_size=_PAPER_VOCAB, d_model=768, n_layers=12, n_heads=6, n_kv_heads=6, mlp_hidden=1536)),
    "paper-1b": _paper("paper-1b", PrefixLMConfig(
        vocab_size=_PAPER_VOCAB, d_model=1536, n_layers=20, n_heads=12, n_kv_heads=12, mlp_hidden=4096)),
    "paper-8b": _paper("paper-8b", PrefixLMConfig(
        vocab_size=_PAPER_VOCAB, d_model=4096, n_layers=32, n_heads=32, n_kv_heads=8, mlp_hidden=14336)),
}


def get_preset(name: str) -> Preset:
    """The preset called `name`; ValueError listing the known names otherwise."""
    try:
        return PRESETS[name]
    except KeyError:
        raise ValueError(f"unknown preset {name!r}; known presets: {', '.join(PRESETS)}") from None
