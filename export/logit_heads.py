"""The LLM graph's output projection split into heads: logits only for the ids a position can emit.

A sampled position emits a visual code or an audio code, never a special token
or a text word (vp.runtime.vocab.Vocabulary.heads). The traced graph projects
onto the whole tied table ([D, V], every step); this rewrite of the finished
graph (after vp.calibration's INT8 rewrite, which addresses the projection as
`head`) gives it an input `head` (int64 [1], the head's index) and projects
onto that head's columns only:

    one head     logits = h @ W[:, low:high]
    two heads    logits = If(head == 0, h @ W[:, visual], Pad(h @ W[:, audio]))

`logits` is [batch, head_width] (the widest head); a narrower head's logits
are padded with zeros after its ids, which nobody reads. Why an If of two
branches padded to one width: TensorRT-RTX 1.7 builds neither an If whose
branches differ in width nor nested Ifs (a Myelin check fails), and ONNX
Runtime computes every output of a graph (two heads as two outputs cost both).

The weight of a branch:
- float (the table shared with the token lookup): a Slice of it with constant
  bounds, which ONNX Runtime folds into a constant once at load and TensorRT
  folds at build, so the bundle stores the table once;
- int8 behind a DequantizeLinear (the head's own copy, vp.calibration.graph):
  the branch's own int8 columns and scales. ONNX Runtime fuses DQ + MatMul into
  MatMulNBits inside a branch only when the weight is the branch's own
  initializer ("Missing required weight" otherwise), and fuses a W8A8
  activation's Q -> DQ -> MatMul into MatMulIntegerToFloat only when all of it
  is in the branch: the activation's Q and DQ move into the branches too.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vp.engines.contract import HEAD, LOGITS


def split_head(model: onnx.ModelProto, heads: tuple[tuple[int, int], ...]) -> None:
    """Rewrite `model` in place so that it computes logits for one of `heads` ([low, high) id
    ranges, one or two) chosen by the input `head`; see the module docstring."""
    if not 1 <= len(heads) <= 2:
        raise ValueError(f"an LLM graph takes one or two output heads, got {len(heads)}")
    graph = model.graph
    producer = {out: node for node in graph.node for out in node.output}
    inits = {init.name: init for init in graph.initializer}
    matmul = _projection(producer)
    width = max(high - low for low, high in heads)
    x, weight = matmul.input
    moved = _activation_qdq(graph, producer, x)
    w_dq = producer.get(weight)
    if weight in inits:
        dtype = inits[weight].data_type
    elif w_dq is not None and w_dq.op_type == "DequantizeLinear" and all(i in inits for i in w_dq.input):
        dtype = inits[w_dq.input[1]].data_type  # the float type it dequantizes to: its scale's
        moved.append(w_dq)
    else:
        raise ValueError(f"{matmul.name}: the output projection's weight is neither a table nor a DequantizeLinear "
                         "of initializers")
    single = matmul.output[0] if len(heads) == 1 else None
    branches = [_branch(i, low, high, width, matmul, moved, inits, single) for i, (low, high) in enumerate(heads)]
    if len(branches) == 1:
        new, inits_of = branches[0]
        graph.initializer.extend(inits_of)
    else:
        select = [helper.make_node("Constant", [], ["head.first"], value=numpy_helper.from_array(np.array([0], np.int64))),
                  helper.make_node("Equal", [HEAD, "head.first"], ["head.is_first_1"]),
                  helper.make_node("Squeeze", ["head.is_first_1"], ["head.is_first"])]
        then, other = (helper.make_graph(nodes, f"head_{i}", [], [_value(f"head_{i}.logits", dtype, width)], inits_of)
                       for i, (nodes, inits_of) in enumerate(branches))
        new = [*select, helper.make_node("If", ["head.is_first"], [matmul.output[0]], name="/head/If",
                                         then_branch=then, else_branch=other)]
    # the new nodes take the projection's place; the Q/DQ nodes that moved into the branches go
    nodes = list(graph.node)
    at = nodes.index(matmul)
    kept = [all(n is not r for r in (matmul, *moved)) for n in nodes]
    order = [n for n, k in zip(nodes[:at], kept) if k] + new + [n for n, k in zip(nodes[at:], kept[at:]) if k]
    del graph.node[:]
    graph.node.extend(order)
    _drop_unread(graph)
    graph.input.append(helper.make_tensor_value_info(HEAD, TensorProto.INT64, [1]))
    out = next(o for o in graph.output if o.name == LOGITS)
    out.type.tensor_type.shape.dim[1].Clear()
    out.type.tensor_type.shape.dim[1].dim_value = width


def _projection(producer: dict) -> onnx.NodeProto:
    """The MatMul whose product is the `logits` output (through a Cast, as traced)."""
    node = producer.get(LOGITS)
    while node is not None and node.op_type == "Cast":
        node = producer.get(node.input[0])
    if node is None or node.op_type != "MatMul":
        raise ValueError("the LLM graph's logits do not come from a MatMul (an output projection)")
    return node


def _activation_qdq(graph, producer: dict, x: str) -> list[onnx.NodeProto]:
    """[Q, DQ] when the projection reads its input through a QuantizeLinear -> DequantizeLinear
    pair that nothing else reads (W8A8), else []."""
    dq = producer.get(x)
    if dq is None or dq.op_type != "DequantizeLinear" or _readers(graph, x) != 1:
        return []
    q = producer.get(dq.input[0])
    if q is None or q.op_type != "QuantizeLinear" or _readers(graph, dq.input[0]) != 1:
        return []
    return [q, dq]


def _branch(index: int, low: int, high: int, width: int, matmul, moved, inits: dict, output: str | None):
    """(nodes, initializers) computing matmul's product over columns [low, high) of its weight,
    zero-padded to `width` columns, into `output` (None: the branch output `head_<index>.logits`)."""
    tag = f"head_{index}"
    nodes, own = [], []
    rename = {}
    for node in moved:  # the Q/DQ nodes of the projection's inputs, with branch-local initializers
        inputs = []
        for name in node.input:
            if name not in inits:  # a tensor of the main graph, or one this branch made
                inputs.append(rename.get(name, name))
                continue
            array = numpy_helper.to_array(inits[name])
            if node.output[0] == matmul.input[1] and array.ndim >= 1:  # the weight's int8 columns / their scales
                array = array[..., low:high]
            local = f"{tag}.{name}"
            if all(init.name != local for init in own):  # a Q and its DQ share their scale
                own.append(numpy_helper.from_array(np.ascontiguousarray(array), local))
            inputs.append(local)
        rename[node.output[0]] = f"{tag}.{node.output[0]}"
        nodes.append(helper.make_node(node.op_type, inputs, [rename[node.output[0]]], name=f"/{tag}{node.name}",
                                      **{a.name: helper.get_attribute_value(a) for a in node.attribute}))
    x, weight = (rename.get(i, i) for i in matmul.input)
    if weight == matmul.input[1]:  # the float table, shared with the lookup: a constant Slice of it
        bounds = [numpy_helper.from_array(np.array(v, np.int64), f"{tag}.{n}")
                  for n, v in (("starts", [low]), ("ends", [high]), ("axes", [1]))]
        own += bounds
        nodes.append(helper.make_node("Slice", [weight, *(b.name for b in bounds)], [f"{tag}.weight"],
                                      name=f"/{tag}/Slice"))
        weight = f"{tag}.weight"
    out = f"{tag}.logits" if output is None else output
    padding = width - (high - low)
    nodes.append(helper.make_node("MatMul", [x, weight], [f"{tag}.product" if padding else out], name=f"/{tag}/MatMul"))
    if padding:
        pads = numpy_helper.from_array(np.array([0, 0, 0, padding], np.int64), f"{tag}.pads")
        own.append(pads)
        nodes.append(helper.make_node("Pad", [f"{tag}.product", pads.name], [out], name=f"/{tag}/Pad"))
    return nodes, own


def _value(name: str, dtype: int, width: int):
    return helper.make_tensor_value_info(name, dtype, ["batch", width])


def _readers(graph, name: str) -> int:
    return sum(name in node.input for node in graph.node)


def _drop_unread(graph) -> None:
    """Remove the initializers no node of the graph (or of its branches) reads any more."""
    read = set()
    stack = [graph]
    while stack:
        g = stack.pop()
        for node in g.node:
            read.update(node.input)
            stack.extend(a.g for a in node.attribute if a.type == onnx.AttributeProto.GRAPH)
    kept = [i for i in graph.initializer if i.name in read]
    del graph.initializer[:]
    graph.initializer.extend(kept)
