"""INT8 for the LLM, from float model to gated graphs: what vp-export runs for int8 / int8-wo.

    calibrate()   the calibration set; for W8A8 the channel statistics, SmoothQuant (on a copy of
                  the LLM: what gets exported) and the per-tensor activation scales
    quantize()    an exported LLM graph -> its int8 graph (same int8 bytes at fp16 and fp32)
    gate()        teacher-forced agreement on the held-out split through the CPU graph as the
                  runtime runs it, and the evaluator's t2v rows against fp32
    record()      the manifest's calibration record
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnx
from torch import nn

from vp.calibration import graph, smoothquant, statistics
from vp.calibration.data import CalibrationConfig, CalibrationSet, calibration_set
from vp.calibration.gate import GateThresholds, eval_rows, teacher_forced, verdict
from vp.calibration.record import CalibrationRecord
from vp.engines.precision import QUANTIZED
from vp.models.checkpoint import Models
from vp.export.llm_graph import FUSED, PagedPrefixLM
from vp.export.logit_heads import split_head
from vp.models.prefix_lm import PrefixLM

WEIGHT_SCALES = "int8, symmetric per output channel (absmax / 127)"
# 48: a case is 2.1 points, so the 5-point rows tolerate the two near-tie flips that greedy decoding
# makes on the demo even at a mean KL of 2e-4 (with 24, a case was 4.2 points and two flips either
# way failed the gate: docs/export.md)
TRAINED_EVAL_CASES = 48
# SmoothQuant's alpha by precision when not given (0: none). W8A8 quantizes activations per tensor.
# Weight-only leaves them fp16 on TensorRT for RTX, but ONNX Runtime's CPU MatMulNBits quantizes them
# to int8 per block of K (KERNEL_BLOCKS) at the accuracy level it is fast at; smoothing took the
# demo's int8-wo from 10 lost t2v direction cases of 192 to 4 (fp32: 0) and passed its gate
# (docs/export.md)
SMOOTHQUANT = {"int8": smoothquant.DEFAULT_ALPHA, "int8-wo": smoothquant.DEFAULT_ALPHA}
# The K blocks of ONNX Runtime's int8 MatMulNBits kernels an int8-wo bundle may name
# (ComponentRecord.cpu_kernel_block), in the order the gate tries them: 128 first (the small
# preset's batch-1 decode step 13-25% faster than at 32, docs/benchmarks.md), then ONNX Runtime's default 32
# (finer activation scales). The export keeps the first block that passes the gate.
KERNEL_BLOCKS = (128, 32)


@dataclass(frozen=True, kw_only=True)
class QuantizationConfig:
    """vp-export's INT8 settings. eval_cases: held-out t2v cases the evaluator runs on both sides
    (None: TRAINED_EVAL_CASES for a preset that ships trained weights, 0 for a random init, where the
    scores mean nothing); enforce: a missed gate fails the export."""

    precision: str
    statistic: str = "max"
    smoothquant_alpha: float | None = None  # None: the precision's default (SMOOTHQUANT); 0: off
    data: CalibrationConfig = field(default_factory=CalibrationConfig)
    thresholds: GateThresholds = field(default_factory=GateThresholds)
    eval_cases: int | None = None
    enforce: bool = True

    def check(self) -> None:
        if self.precision not in QUANTIZED:
            raise ValueError(f"{self.precision} is not a quantized precision ({', '.join(QUANTIZED)})")
        if self.statistic not in statistics.STATISTICS:
            raise ValueError(f"unknown calibration statistic {self.statistic!r}; expected one of "
                             f"{', '.join(statistics.STATISTICS)}")
        if self.alpha is not None and not 0 < self.alpha < 1:
            raise ValueError(f"--smoothquant-alpha must be in (0, 1), or 0 for none; got {self.alpha}")
        if self.eval_cases is not None and self.eval_cases < 0:
            raise ValueError(f"--gate-eval-cases must be >= 0, got {self.eval_cases}")
        self.data.check()

    @property
    def w8a8(self) -> bool:
        return self.precision == "int8"

    @property
    def alpha(self) -> float | None:
        """SmoothQuant's alpha, None for no smoothing."""
        alpha = SMOOTHQUANT[self.precision] if self.smoothquant_alpha is None else self.smoothquant_alpha
        return alpha or None


@dataclass
class Calibrated:
    """The LLM to export (SmoothQuant applied for W8A8), its fp32 weights by graph module name, the
    activation scales (W8A8) and the data."""

    config: QuantizationConfig
    model: PrefixLM
    weights: dict[str, np.ndarray]
    activation_scales: dict[str, float] | None
    data: CalibrationSet


def calibrate(models: Models, config: QuantizationConfig) -> Calibrated:
    config.check()
    data = calibration_set(models, config.data)
    model = copy.deepcopy(models.llm).float().eval()
    scales = None
    if config.alpha:
        smoothquant.smooth(model, statistics.channel_max(model, data.calibration), config.alpha)
    if config.w8a8:
        scales = graph_scales(statistics.tensor_scales(model, data.calibration, config.statistic))
    return Calibrated(config, model, graph_weights(model), scales, data)


def graph_weights(model: PrefixLM) -> dict[str, np.ndarray]:
    """Graph module name -> the fp32 [K, N] weight its MatMul multiplies (`head`: the tied table);
    the graph's modules (vp.export.llm_graph) fuse some of the reference's (FUSED)."""
    blocks = PagedPrefixLM(model).blocks
    out = {f"blocks.{name}": m.weight.detach().t().numpy().copy()
           for name, m in blocks.named_modules() if isinstance(m, nn.Linear)}
    out[statistics.HEAD] = model.tok_embeddings.weight.detach().t().numpy().copy()
    return out


def graph_scales(scales: dict[str, float]) -> dict[str, float]:
    """Activation scales by reference module name -> by graph module name. The modules a fused
    MatMul holds all read its input (one tensor), so they have one scale; the largest is kept."""
    out = dict(scales)
    for block in {name.rsplit(".", 2)[0] for name in scales if name.startswith("blocks.")}:
        for graph_name, parts in FUSED.items():
            out[f"{block}.{graph_name}"] = max(out.pop(f"{block}.{part}") for part in parts)
    return out


def quantize(path: Path, calibrated: Calibrated, tensorrt: bool, heads: tuple[tuple[int, int], ...]) -> None:
    """Rewrite the LLM graph at `path` (fp16 or fp32, exported with its whole output projection)
    as its int8 graph (for TensorRT, or for ONNX Runtime's CPU provider), with the projection
    then split into `heads` (vp.export.logit_heads)."""
    model = graph.quantize_graph(onnx.load(str(path)), calibrated.weights, calibrated.activation_scales, tensorrt)
    split_head(model, heads)
    onnx.save(model, str(path))


def gate(calibrated: Calibrated, models: Models, bundle: Path,
         progress: Callable[[str], None] | None = None, fp32_rows: dict[str, float] | None = None) -> dict:
    """Run the gate on the bundle at `bundle` (its manifest written, with the LLM's cpu_kernel_block):
    the verdict record. fp32_rows: the fp32 reference's evaluator rows of an earlier gate of the
    same model (they do not depend on the bundle), computed here when None."""
    from vp.engines.manifest import Manifest
    from vp.runtime.backends.ort import OrtPagedLLM

    config = calibrated.config
    manifest = Manifest.read(bundle)
    record = manifest.components["llm"]
    longest = max(min(len(s.ids), s.prefix_len + config.thresholds.positions) for s in calibrated.data.held_out)
    llm = OrtPagedLLM(manifest.onnx_path(bundle, "llm", cpu=True), record.contract, "fp32",
                      num_blocks=-(-longest // 16), threads=None, kernel_block=record.cpu_kernel_block)
    teacher = teacher_forced(models.llm.float().eval(), llm, calibrated.data.held_out, config.thresholds,
                             models.preset.vocab, (lambda i, n: progress(f"teacher-forced {i}/{n}")) if progress else None)
    cases = config.eval_cases if config.eval_cases is not None else (TRAINED_EVAL_CASES if models.preset.weights else 0)
    evaluation = _evaluation(models, bundle, cases, progress, fp32_rows) if cases else None
    return verdict(teacher, evaluation, config.thresholds) | {"cpu_kernel_block": record.cpu_kernel_block}


def _evaluation(models: Models, bundle: Path, cases: int, progress, fp32_rows: dict[str, float] | None) -> dict:
    from vp.runtime.pipeline import Pipeline
    from vp.training.evaluator import BundleGenerator, ReferenceGenerator, evaluate

    say = (lambda side: lambda text: progress(f"evaluator ({side}) {text}")) if progress else (lambda side: None)
    pipeline = Pipeline.load(bundle, backend="ort")
    try:
        quantized = evaluate(BundleGenerator(pipeline), cases=cases, tasks=("t2v",), progress=say("int8"))
    finally:
        pipeline.close()
    if fp32_rows is None:
        fp32_rows = eval_rows(evaluate(ReferenceGenerator(models), cases=cases, tasks=("t2v",), progress=say("fp32")))
    return {"cases": cases, "quantized": eval_rows(quantized), "fp32": fp32_rows}


def record(calibrated: Calibrated, gate_record: dict) -> CalibrationRecord:
    c = calibrated.config
    smoothing = f"SmoothQuant (alpha {c.alpha}), " if c.alpha else ""
    if c.w8a8:
        method = f"W8A8: {smoothing}per-tensor int8 activations by {c.statistic}, per-channel int8 weights"
    else:
        method = (f"weight-only int8: {smoothing}per-channel int8 weights, activations not calibrated (fp16 on "
                  f"TensorRT for RTX, int8 per block of K in ONNX Runtime's CPU kernel)")
    return CalibrationRecord(precision=c.precision, method=method, statistic=c.statistic if c.w8a8 else None,
                             smoothquant_alpha=c.alpha,
                             data=calibrated.data.describe(), weight_scales=WEIGHT_SCALES,
                             activation_scales=calibrated.activation_scales or {}, gate=gate_record)
