"""torch -> ONNX for one component, at fp32 or fp16 (INT8: vp.calibration rewrites these).

fp16 is an fp16 ONNX graph: the module is cast to half before tracing, and the
reference models keep fp32 where numerics need it on their own (RMS/group
norm statistics, attention softmax, logits are computed in float32 inside the
modules), so the exported graph carries those islands as explicit Casts.
TensorRT's builders are strongly typed: this graph is the precision.

The TorchScript exporter is used (dynamo=False): it traces the tiny preset's
seven graphs in seconds on 2 cores, where the dynamo exporter took ~8 s for
the LLM alone; both produce graphs that ONNX Runtime and the TensorRT parser
accept (checked with the LLM graph).
"""

from __future__ import annotations

import copy
import dataclasses
import tempfile
import warnings
from pathlib import Path

import torch

from vp.engines.contract import HEAD, Contract
from vp.export.graphs import example_inputs, graph_for
from vp.export.logit_heads import split_head
from vp.export.shape_folding import fold_reshapes
from vp.models.checkpoint import Models

OPSET = 18
FLOAT_TYPES = ("fp32", "fp16")


def export_component(models: Models, contract: Contract, path: str | Path, precision: str = "fp32",
                     heads: bool = True) -> list[str]:
    """Write `contract.component` as ONNX to `path` at float type `precision` (fp32 or fp16; INT8 is
    vp.calibration's rewrite of such a graph); returns the external data file names written
    beside it (empty for graphs under 2 GB). The LLM's output projection is split into the
    vocabulary's heads (vp.export.logit_heads) unless `heads` is False: vp.calibration quantizes
    the whole projection first and splits it after."""
    if precision not in FLOAT_TYPES:
        raise ValueError(f"unknown float type {precision!r}; expected one of {', '.join(FLOAT_TYPES)}")
    path = Path(path)
    dtype = torch.float16 if precision == "fp16" else torch.float32
    module = graph_for(contract.component, models)
    if precision == "fp16":
        module = copy.deepcopy(module).half()
    module.eval()
    if contract.component == "llm":  # traced with the whole projection; the head input comes with the split
        contract = dataclasses.replace(contract, inputs=tuple(s for s in contract.inputs if s.name != HEAD))
    args = example_inputs(contract, dtype, models.preset)
    with tempfile.TemporaryDirectory(dir=path.parent) as scratch:
        traced = Path(scratch) / path.name
        _trace(module, args, contract, traced)
        if contract.component == "llm":
            _finish_llm(traced, models.preset.vocab.heads() if heads else None)
        if len(list(Path(scratch).iterdir())) == 1:
            traced.replace(path)
            return []
        # above protobuf's 2 GB the exporter writes one file per weight: gather them into one
        import onnx

        model = onnx.load(str(traced), load_external_data=True)
        data_name = path.name + ".data"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        (path.parent / data_name).chmod(path.stat().st_mode)  # onnx creates it 0600
    return [data_name]


def _finish_llm(path: Path, heads: tuple[tuple[int, int], ...] | None) -> None:
    """The traced LLM graph with constant Reshape shapes (vp.export.shape_folding) and, given
    `heads`, its projection split into them, written over it; weights in external data files
    beside it stay where they are."""
    import onnx

    model = onnx.load(str(path), load_external_data=False)
    fold_reshapes(model)
    if heads is not None:
        split_head(model, heads)
    onnx.save_model(model, str(path))


def _trace(module, args, contract: Contract, path: Path) -> None:
    with torch.no_grad(), warnings.catch_warnings():
        # tracer warnings about Python ints from shapes are expected: shape checks at the boundary
        warnings.simplefilter("ignore")
        torch.onnx.export(
            module, args, str(path),
            input_names=[s.name for s in contract.inputs],
            output_names=[s.name for s in contract.outputs],
            dynamic_axes=contract.dynamic_axes(),
            opset_version=OPSET,
            dynamo=False,
        )
