"""Activation statistics of the LLM's weight MatMuls, over calibration sequences.

Every weight MatMul of the graph reads one activation: the input of each
nn.Linear in the blocks (wq, wk, wv, wo, w_gate, w_up, w_down; the graph fuses wq, wk, wv and
w_gate, w_up, which read one tensor each: vp.calibration.llm.graph_scales), and `head`, the
final norm's output that the tied output projection multiplies. Per tensor:

    max          the largest |x| seen (TensorRT's and ModelOpt's default for W8A8)
    percentile   the 99.99th percentile of |x|: clips the rarest outliers
    mse          the clip c minimizing the expected squared error of quantizing to
                 [-c, c] in 255 levels (rounding noise inside, clipping outside):
                 ModelOpt's "mse" calibrator

percentile and mse are read off a 2048-bin histogram of |x| over [0, max].
Per input channel (SmoothQuant): the largest |x| of each channel.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import numpy as np
import torch
from torch import nn

from vp.calibration.data import Sequence
from vp.models.prefix_lm import PrefixLM

STATISTICS = ("max", "percentile", "mse")
PERCENTILE = 99.99
BINS = 2048
HEAD = "head"


def observed(model: PrefixLM) -> dict[str, nn.Module]:
    """Name -> the module whose output (for `head`: the final norm) or input (every Linear of the
    blocks) is the activation a weight MatMul reads."""
    names = {f"blocks.{name}": m for name, m in model.blocks.named_modules() if isinstance(m, nn.Linear)}
    return {**names, HEAD: model.norm}


def _forward_all(model: PrefixLM, sequences: Iterable[Sequence], record: Callable[[str, torch.Tensor], None]) -> None:
    """Run every sequence through `model`, calling record(name, activation [tokens, channels])."""
    hooks = []
    for name, module in observed(model).items():
        if name == HEAD:
            hook = (lambda n: lambda m, args, out: record(n, out.detach().reshape(-1, out.shape[-1]).float()))(name)
        else:
            hook = (lambda n: lambda m, args, out: record(n, args[0].detach().reshape(-1, args[0].shape[-1]).float()))(name)
        hooks.append(module.register_forward_hook(hook))
    try:
        with torch.no_grad():
            for s in sequences:  # one at a time: no padding enters the statistics
                model(torch.from_numpy(s.ids)[None], torch.tensor([s.prefix_len]),
                      torch.from_numpy(s.embeds)[None], torch.from_numpy(s.embed_mask)[None])
    finally:
        for h in hooks:
            h.remove()


def channel_max(model: PrefixLM, sequences: list[Sequence]) -> dict[str, torch.Tensor]:
    """Name -> [channels] largest |x| per input channel."""
    out: dict[str, torch.Tensor] = {}

    def record(name, x):
        m = x.abs().amax(0)
        out[name] = torch.maximum(out[name], m) if name in out else m

    _forward_all(model, sequences, record)
    return out


def tensor_scales(model: PrefixLM, sequences: list[Sequence], statistic: str) -> dict[str, float]:
    """Name -> the per-tensor int8 scale (clip / 127) of its activation by `statistic`."""
    if statistic not in STATISTICS:
        raise ValueError(f"unknown calibration statistic {statistic!r}; expected one of {', '.join(STATISTICS)}")
    peak = {name: float(m.max()) for name, m in channel_max(model, sequences).items()}
    if statistic == "max":
        return {name: max(p, 1e-8) / 127 for name, p in peak.items()}
    histograms = {name: np.zeros(BINS, np.float64) for name in peak}

    def record(name, x):
        top = max(peak[name], 1e-8)
        histograms[name] += torch.histc(x.abs(), bins=BINS, min=0.0, max=top).double().numpy()

    _forward_all(model, sequences, record)
    pick = percentile_clip if statistic == "percentile" else mse_clip
    return {name: max(pick(histograms[name], peak[name]), 1e-8) / 127 for name in peak}


def percentile_clip(histogram: np.ndarray, top: float, percentile: float = PERCENTILE) -> float:
    """The |x| below which `percentile` % of the histogram's mass lies (bins over [0, top])."""
    cumulative = np.cumsum(histogram) / max(histogram.sum(), 1)
    index = int(np.searchsorted(cumulative, percentile / 100))
    return top * (index + 1) / len(histogram)


def mse_clip(histogram: np.ndarray, top: float, candidates: int = 128) -> float:
    """The clip c in [top / 16, top] with the least expected squared error of symmetric int8
    quantization: (c / 127)^2 / 12 for every |x| <= c, (|x| - c)^2 beyond it."""
    centres = (np.arange(len(histogram)) + 0.5) * top / len(histogram)
    best, best_error = top, np.inf
    for c in np.linspace(top / 16, top, candidates):
        inside = centres <= c
        error = (histogram[inside].sum() * (c / 127) ** 2 / 12
                 + (histogram[~inside] * (centres[~inside] - c) ** 2).sum())
        if error < best_error:
            best, best_error = float(c), error
    return best
