"""The torch module behind each component graph, and example inputs to trace it.

Each graph's forward takes the contract's inputs in order and returns its
outputs in order (vp.export.contracts). Example inputs are zeros of small but
non-trivial sizes (never 1 on a dynamic axis, which tracing could specialize);
zeros are valid everywhere (ids, codes, block tables, masks).
"""

from __future__ import annotations

import torch
from torch import nn

from vp.engines.contract import Contract
from vp.export.llm_graph import PagedPrefixLM
from vp.export.sampler_graph import SamplerGraph
from vp.models.checkpoint import Models
from vp.models.presets import Preset
from vp.models.video_decoder_step import DecoderStep


class MethodGraph(nn.Module):
    """A graph whose forward is one method of a reference model (encode, decode, forward)."""

    def __init__(self, owner: nn.Module, method: str):
        super().__init__()
        self.owner = owner
        self.method = method

    def forward(self, *inputs):
        return getattr(self.owner, self.method)(*inputs)


def graph_for(component: str, models: Models) -> nn.Module:
    """The module whose forward is `component`'s contract."""
    if component == "llm":
        return PagedPrefixLM(models.llm)
    if component in ("video_decoder_first", "video_decoder_step"):
        return DecoderStep(models.video_tokenizer, first=component == "video_decoder_first")
    if component == "sampler":
        return SamplerGraph()
    if component.startswith("superres_"):
        return models.superres[int(component.split("_")[1])]
    if component == "sr_fusion":
        return models.sr_fusion
    owner, method = {
        "text_encoder": (models.text_encoder, "forward"),
        "video_encoder": (models.video_tokenizer, "encode"),
        "video_decoder": (models.video_tokenizer, "decode"),
        "audio_encoder": (models.audio_tokenizer, "encode"),
        "audio_decoder": (models.audio_tokenizer, "decode"),
    }[component]
    return MethodGraph(owner, method)


def example_inputs(contract: Contract, dtype: torch.dtype, preset: Preset) -> tuple[torch.Tensor, ...]:
    """Zeros shaped by the contract's first profile: opt sizes, but at least 2 on
    every dynamic axis. Large axes are traced small (2 latent frames, rows and
    columns; 2 audio frames; a short LLM step): tracing runs the module once,
    and a full-size fp16 3D convolution on a CPU takes minutes."""
    profile = contract.profiles[0]
    f, s, hop = preset.video_tokenizer.temporal_factor, preset.video_tokenizer.spatial_factor, preset.audio_tokenizer.hop
    small = {"batch": 2, "num_blocks": 4, "max_blocks": 2, "tokens": 3, "latent_frames": 2, "latent_height": 2,
             "latent_width": 2, "frames": 1 + f, "height": 2 * s, "width": 2 * s, "audio_frames": 2,
             "samples": 2 * hop}
    dtypes = {"int64": torch.int64, "bool": torch.bool, "float32": torch.float32, "float": dtype}
    tensors = []
    for spec in contract.inputs:
        shape = [d if isinstance(d, int) else _small(d, small, profile) for d in spec.shape]
        tensors.append(torch.zeros(shape, dtype=dtypes[spec.dtype]))
    return tuple(tensors)


def _small(axis: str, small: dict[str, int], profile) -> int:
    """The traced size of a dynamic axis; `<axis>_x<s>` (a decoder state's grid) is s times <axis>'s."""
    base, _, scale = axis.rpartition("_x")
    if base in small and scale.isdigit():
        return small[base] * int(scale)
    return small.get(axis, max(2, profile.dims[axis][1]))
