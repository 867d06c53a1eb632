"""Constant Reshape shapes: the folded graph computes what the traced one does, at every shape."""

import warnings

import numpy as np
import onnx
import onnxruntime as ort
import pytest
import torch
from torch import nn

from vp.export.shape_folding import fold_reshapes


class Heads(nn.Module):
    """Reshapes of the kinds the LLM graph traces: split heads, group queries, merge heads, and one
    (B * T, D) flatten whose shape needs two unknown dims."""

    def __init__(self):
        super().__init__()
        self.scale = nn.Parameter(torch.linspace(0.5, 1.5, 12))

    def forward(self, x):  # (B, T, 12)
        B, T, _ = x.shape
        x = x * self.scale
        h = x.view(B, T, 3, 4).transpose(1, 2)  # (B, 3, T, 4): [0, 0, 3, 4]
        g = h.reshape(B, 1, 3 * T, 4) * 2  # [0, 1, -1, 4]
        merged = g.reshape(B, 3, T, 4).transpose(1, 2).reshape(B, T, 12)  # [0, 3, -1, 4], [0, 0, 12]
        flat = x.reshape(B * T, 3, 4)  # (B * T) and... one unknown only: [-1, 3, 4]
        wide = x.reshape(B * 2, T * 6)  # two unknown dims: stays traced
        return merged, flat, wide


@pytest.fixture(scope="module")
def traced(tmp_path_factory):
    path = tmp_path_factory.mktemp("fold") / "heads.onnx"
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Heads(), (torch.zeros(2, 3, 12),), str(path), input_names=["x"],
                          output_names=["merged", "flat", "wide"], dynamic_axes={"x": {0: "batch", 1: "tokens"}},
                          opset_version=18, dynamo=False)
    return onnx.load(str(path))


def _run(model, x):
    session = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return session.run(None, {"x": x})


def test_folded_graph_computes_the_same_at_every_shape(traced):
    folded = onnx.ModelProto()
    folded.CopyFrom(traced)
    assert fold_reshapes(folded) == 5  # all but the one with two unknown dims
    onnx.checker.check_model(folded)
    rng = np.random.default_rng(0)
    for shape in [(1, 1, 12), (2, 3, 12), (5, 7, 12)]:
        x = rng.standard_normal(shape).astype(np.float32)
        for a, b in zip(_run(traced, x), _run(folded, x)):
            np.testing.assert_array_equal(a, b)


def test_weights_in_external_files_are_never_read(traced, tmp_path):
    """A graph above 2 GB keeps its weights in files beside it: folding reads shapes only."""
    copy = onnx.ModelProto()
    copy.CopyFrom(traced)  # saving as external data rewrites the proto it saves
    onnx.save_model(copy, str(tmp_path / "heads.onnx"), save_as_external_data=True, size_threshold=0,
                    location="heads.onnx.data")
    model = onnx.load(str(tmp_path / "heads.onnx"), load_external_data=False)  # base dir unknown: reading fails
    assert fold_reshapes(model) == 5
    onnx.save_model(model, str(tmp_path / "heads.onnx"))
    x = np.random.default_rng(1).standard_normal((2, 5, 12)).astype(np.float32)
    folded = ort.InferenceSession(str(tmp_path / "heads.onnx"), providers=["CPUExecutionProvider"])
    for a, b in zip(_run(traced, x), folded.run(None, {"x": x})):
        np.testing.assert_array_equal(a, b)


def test_folding_removes_the_shape_arithmetic(traced):
    folded = onnx.ModelProto()
    folded.CopyFrom(traced)
    fold_reshapes(folded)
    ops = [n.op_type for n in folded.graph.node]
    before = [n.op_type for n in traced.graph.node]
    assert ops.count("Reshape") == before.count("Reshape") == 6
    # only the unfolded Reshape still builds its shape: one Concat of two products of dims
    assert before.count("Concat") == 6 and ops.count("Concat") == 1
    assert len(ops) < len(before) - 20, (len(before), len(ops))
    shapes = {init.name: list(onnx.numpy_helper.to_array(init)) for init in folded.graph.initializer}
    constant = sorted(shapes[n.input[1]] for n in folded.graph.node if n.op_type == "Reshape" and n.input[1] in shapes)
    assert constant == sorted([[0, 0, 3, 4], [0, 1, -1, 4], [0, 3, -1, 4], [0, 0, 12], [-1, 3, 4]])
