"""Parameter counts of each preset's components, computed on the meta device.

docs/models.md holds `markdown_table()`; tests/models/test_presets.py keeps
the two equal.
"""

from __future__ import annotations

import json
import math

import torch
from safetensors import safe_open

from vp.models.audio_tokenizer import AudioTokenizer
from vp.models.prefix_lm import PrefixLM
from vp.models.presets import PRESETS, Preset
from vp.models.sr_fusion import SRFusion
from vp.models.superres import SuperResolution
from vp.models.text_encoder import resolve_source
from vp.models.video_tokenizer import VideoTokenizer


def _count(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def _text_encoder(preset: Preset) -> tuple[int, int]:
    """(frozen encoder parameters, learned projection parameters), from the source's files."""
    source = resolve_source(preset.text_encoder.source)
    config = json.loads((source / "config.json").read_text())
    hidden = config.get("hidden_size") or config["d_model"]
    with safe_open(str(source / "model.safetensors"), "pt") as f:
        frozen = sum(math.prod(f.get_slice(k).get_shape()) for k in f.keys()
                     if not k.startswith("decoder.") and not k.endswith("position_ids"))
    width = preset.text_encoder.width
    return frozen, hidden * width + width


def count_parameters(preset: Preset) -> dict[str, int]:
    """Component -> parameter count; nothing is allocated (meta device)."""
    frozen, projection = _text_encoder(preset)
    with torch.device("meta"):
        counts = {
            "video tokenizer": _count(VideoTokenizer(preset.video_tokenizer)),
            "audio tokenizer": _count(AudioTokenizer(preset.audio_tokenizer)),
            "text encoder (frozen)": frozen,
            "text projection": projection,
            "llm": _count(PrefixLM(preset.llm)),
        }
        for i, config in enumerate(preset.superres):
            counts[f"superres {i + 1}"] = _count(SuperResolution(config))
        if preset.sr_fusion:
            counts["sr fusion"] = _count(SRFusion(preset.sr_fusion))
    return counts


def markdown_table() -> str:
    """One row per preset: parameters per component, in millions."""
    rows = {name: count_parameters(preset) for name, preset in PRESETS.items()}
    columns = ["video tokenizer", "audio tokenizer", "text encoder (frozen)", "text projection", "llm",
               "superres 1", "superres 2", "sr fusion"]
    lines = ["| preset | " + " | ".join(columns) + " |", "|---" * (len(columns) + 1) + "|"]
    for name, counts in rows.items():
        cells = [f"{counts[c] / 1e6:.2f}M" if c in counts else "-" for c in columns]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"
