"""Constant Reshape shapes for a traced graph: the shape arithmetic of dynamic axes, folded away.

The TorchScript exporter turns `x.view(B, T, H, hd)`, with B and T read from a
dynamic shape, into Shape -> Gather -> Unsqueeze -> Concat -> Reshape: four to
eight small operations per Reshape, which ONNX Runtime cannot fold because the
dims are not known before a run. ONNX's own Reshape semantics say the same
with a constant: 0 copies the input's dim at that index, -1 takes what is
left. Symbolic shape inference (onnxruntime's, on sympy) names every dim of
every tensor, so each output dim of a Reshape is either

    a number                               -> that number
    the same symbol as the input's dim i   -> 0
    anything else                          -> -1 (allowed once per shape)

and a Reshape whose shape needs two -1 keeps its traced shape. The arithmetic
no longer read is then removed. The result computes the same tensors
(tests/export/test_shape_folding.py runs both graphs on several shapes).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import helper, numpy_helper

SMALL = 64  # initializers of at most this many elements keep their values for inference (shape constants)


def fold_reshapes(model: onnx.ModelProto) -> int:
    """Rewrite `model` in place; returns the number of Reshapes given a constant shape. For graphs
    without control flow (If, Loop, Scan read names from their subgraphs, which this does not follow)."""
    if any(a.type in (onnx.AttributeProto.GRAPH, onnx.AttributeProto.GRAPHS) for n in model.graph.node for a in n.attribute):
        raise ValueError("shape folding does not handle graphs with control flow (If, Loop, Scan)")
    from onnxruntime.tools.symbolic_shape_infer import SymbolicShapeInference

    inferred = SymbolicShapeInference.infer_shapes(_shapes_only(model), auto_merge=False, guess_output_rank=False)
    dims = {}
    for info in [*inferred.graph.value_info, *inferred.graph.input, *inferred.graph.output]:
        tensor = info.type.tensor_type
        if tensor.HasField("shape"):
            dims[info.name] = [d.dim_value if d.HasField("dim_value") else (d.dim_param or None) for d in tensor.shape.dim]
    graph = model.graph
    constants = {i.name for i in graph.initializer}
    folded = 0
    for node in graph.node:
        if node.op_type != "Reshape" or node.input[1] in constants:
            continue
        shape = _constant_shape(dims.get(node.input[0]), dims.get(node.output[0]))
        if shape is None:
            continue
        name = f"{node.output[0]}__shape"
        graph.initializer.append(numpy_helper.from_array(np.array(shape, np.int64), name))
        constants.add(name)
        node.input[1] = name
        folded += 1
    _remove_unread(graph)
    return folded


def _shapes_only(model: onnx.ModelProto) -> onnx.ModelProto:
    """`model` with every initializer but the small ones (shape constants) declared as an input of
    its dtype and shape: inference needs their shapes, not their values, which may not even be
    loaded (a graph above 2 GB keeps its weights in external files)."""
    graph = model.graph
    small = [i for i in graph.initializer if not i.external_data and int(np.prod(i.dims)) <= SMALL]
    kept = {i.name for i in small}
    weights = [helper.make_tensor_value_info(i.name, i.data_type, list(i.dims))
               for i in graph.initializer if i.name not in kept]
    light = helper.make_model(helper.make_graph(graph.node, graph.name, [*graph.input, *weights], graph.output, small),
                              opset_imports=model.opset_import)
    light.ir_version = model.ir_version
    return light


def _constant_shape(source: list | None, target: list | None) -> list[int] | None:
    if source is None or target is None:
        return None
    shape = []
    for i, dim in enumerate(target):
        if isinstance(dim, int) and dim > 0:
            shape.append(dim)
        elif dim is not None and i < len(source) and source[i] == dim:
            shape.append(0)
        else:
            shape.append(-1)
    return shape if shape.count(-1) <= 1 else None


def _remove_unread(graph: onnx.GraphProto) -> None:
    """Drop nodes none of whose outputs reach a graph output, then initializers no node reads."""
    needed = {o.name for o in graph.output}
    kept = []
    for node in reversed(graph.node):
        if any(o in needed for o in node.output):
            kept.append(node)
            needed.update(i for i in node.input if i)
    kept.reverse()
    del graph.node[:]
    graph.node.extend(kept)
    initializers = [i for i in graph.initializer if i.name in needed]
    del graph.initializer[:]
    graph.initializer.extend(initializers)
