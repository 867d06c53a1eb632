"""An exported LLM graph -> its INT8 graph (explicit quantization, standard ONNX ops).

Every MatMul whose second input is a weight initializer [K, N] (the exporter
names the node after its module: /blocks.0/attn/wq/MatMul) gets int8 weights,
symmetric per output channel (scale [N], axis 1), through a DequantizeLinear:

    weight-only   x ------------------------------> MatMul <- DQ(W_int8, s_w)
    W8A8          x -> Q(s_x) -> DQ(s_x) ---------> MatMul <- DQ(W_int8, s_w)

The tied [D, V] embedding table is quantized once and stored twice in int8:
the output projection reads one copy through a DQ; the token lookup reads the
other. ONNX Runtime fuses a DQ + MatMul only when the DQ is its weight's sole
reader (shared with the lookup, the head's DQ stayed a DQ that dequantized the
whole table at every step; the same for a shared scale). The lookup differs
by target:

    ONNX Runtime (cpu graph)   Gather int8 columns and their scales, Cast, Mul: only the
                               gathered columns are ever dequantized
    TensorRT                   DQ(table) -> Gather: TensorRT accepts an int8 constant only as
                               the input of a DQ ("Quantized constant ... is only allowed
                               before DQ"), and folds this one into a float lookup table

Each MatMul gets its own activation Q/DQ pair, with the scale of the tensor
it reads: ONNX Runtime fuses Q -> DQ -> MatMul into MatMulIntegerToFloat only
for a Q and a DQ with one reader each (with one Q shared by wq, wk and wv, 13
of 43 MatMuls were fused, the rest ran a float MatMul behind a DQ).

ONNX Runtime on a CPU fuses DQ + MatMul into MatMulNBits (8 bits; integer
compute at session option `session.qdq_matmulnbits_accuracy_level` 4) and
Q/DQ + MatMul into MatMulIntegerToFloat; TensorRT reads the same pattern as
explicit quantization. Q/DQ of fp16 need opset 19, which the graph is raised to
(no op of this graph changes meaning from 18 to 19).
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from vp.calibration.statistics import HEAD

OPSET = 19


def quantize_weight(weight: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """weight [K, N] float -> (int8 [K, N], scale [N] float32): symmetric per output channel,
    weight ~= q * scale with q in [-127, 127]."""
    w = np.asarray(weight, np.float32)
    scale = np.maximum(np.abs(w).max(0), 1e-12) / 127
    return np.clip(np.round(w / scale), -127, 127).astype(np.int8), scale.astype(np.float32)


def weight_matmuls(model: onnx.ModelProto) -> dict[str, onnx.NodeProto]:
    """Module name (`head` for the output projection) -> each MatMul that reads a 2-D weight initializer."""
    inits = {i.name: i for i in model.graph.initializer}
    gathered = {n.input[0] for n in model.graph.node if n.op_type == "Gather"}
    out = {}
    for node in model.graph.node:
        if node.op_type != "MatMul" or node.input[1] not in inits or len(inits[node.input[1]].dims) != 2:
            continue
        if node.input[1] in gathered:  # the tied table
            out[HEAD] = node
        else:
            path = node.name.strip("/").split("/")
            if len(path) < 2 or path[-1] != "MatMul":
                raise ValueError(f"cannot name the module of weight MatMul {node.name!r}")
            out[".".join(path[:-1])] = node
    return out


def quantize_graph(model: onnx.ModelProto, weights: dict[str, np.ndarray],
                   activation_scales: dict[str, float] | None = None, tensorrt: bool = False) -> onnx.ModelProto:
    """A new model: `model` with int8 weights for every weight MatMul (weights: module name -> the
    fp32 [K, N] weight it multiplies, taken from the float model, so a fp16 and a fp32 graph get
    the same int8 bytes), and with activation_scales (W8A8) Q/DQ on each MatMul's input.
    tensorrt: the token lookup as TensorRT accepts it (see above)."""
    model = _copy(model)
    graph = model.graph
    float_type = _float_type(model)
    scale_dtype = helper.tensor_dtype_to_np_dtype(float_type)
    matmuls = weight_matmuls(model)
    missing = sorted(set(matmuls) - set(weights))
    if missing:
        raise ValueError(f"no float weight for the graph's MatMul(s) {', '.join(missing)}")
    inits = {i.name: i for i in graph.initializer}
    new_inits, weight_nodes, replaced = [], [], set()
    quantized_table = None
    for name, node in matmuls.items():
        init = inits[node.input[1]]
        w = np.asarray(weights[name], np.float32)
        if tuple(init.dims) != w.shape:
            raise ValueError(f"weight of {name}: the graph has {tuple(init.dims)}, the model {w.shape}")
        q, scale = quantize_weight(w)
        new_inits += [numpy_helper.from_array(q, f"{name}.weight_int8"),
                      numpy_helper.from_array(scale.astype(scale_dtype), f"{name}.weight_scale")]
        weight_nodes.append(helper.make_node("DequantizeLinear", [f"{name}.weight_int8", f"{name}.weight_scale"],
                                             [f"{name}.weight_dq"], name=f"/{name}/weight/DequantizeLinear", axis=1))
        replaced.add(init.name)
        if name == HEAD:
            quantized_table = init.name
            new_inits += [numpy_helper.from_array(q, f"{HEAD}.lookup_int8"),
                          numpy_helper.from_array(scale.astype(scale_dtype), f"{HEAD}.lookup_scale")]
        node.input[1] = f"{name}.weight_dq"
    nodes = list(weight_nodes)
    for node in graph.node:
        if node.op_type == "Gather" and node.input[0] == quantized_table:
            nodes += _lookup(node, float_type, tensorrt)
            continue
        if activation_scales is not None and node.op_type == "MatMul" and node.input[1].endswith(".weight_dq"):
            name = node.input[1][:-len(".weight_dq")]
            nodes += _qdq(name, node.input[0], activation_scales[name], scale_dtype, new_inits)
            node.input[0] = f"{name}.input_dq"
        nodes.append(node)
    del graph.node[:]
    graph.node.extend(nodes)
    kept = [i for i in graph.initializer if i.name not in replaced]
    del graph.initializer[:]
    graph.initializer.extend(kept + new_inits)
    for opset in model.opset_import:
        if opset.domain in ("", "ai.onnx"):
            opset.version = max(opset.version, OPSET)
    return model


def _lookup(node: onnx.NodeProto, float_type: int, tensorrt: bool) -> list[onnx.NodeProto]:
    """Gather(table [D, V], ids, axis=1) -> Gather(int8 columns) * Gather(their scales), or for
    TensorRT Gather(DQ(int8 table), ids)."""
    axis = next((helper.get_attribute_value(a) for a in node.attribute if a.name == "axis"), 0)
    if axis != 1:
        raise ValueError(f"{node.name}: expected the token lookup to gather table columns (axis 1), got axis {axis}")
    ids, out = node.input[1], node.output[0]
    if tensorrt:
        return [helper.make_node("DequantizeLinear", [f"{HEAD}.lookup_int8", f"{HEAD}.lookup_scale"], [f"{out}.table"],
                                 name=f"{node.name}/DequantizeLinear", axis=1),
                helper.make_node("Gather", [f"{out}.table", ids], [out], name=node.name, axis=1)]
    return [
        helper.make_node("Gather", [f"{HEAD}.lookup_int8", ids], [f"{out}.int8"], name=f"{node.name}/int8", axis=1),
        helper.make_node("Cast", [f"{out}.int8"], [f"{out}.float"], name=f"{node.name}/cast", to=float_type),
        helper.make_node("Gather", [f"{HEAD}.lookup_scale", ids], [f"{out}.scale"], name=f"{node.name}/scale", axis=0),
        helper.make_node("Mul", [f"{out}.float", f"{out}.scale"], [out], name=f"{node.name}/dequantize"),
    ]


def _qdq(name: str, x: str, scale: float, scale_dtype, new_inits: list) -> list[onnx.NodeProto]:
    """Q/DQ of activation x for the MatMul of module `name` (per tensor, symmetric: zero point 0)."""
    new_inits += [numpy_helper.from_array(np.array(scale, scale_dtype), f"{name}.input_scale"),
                  numpy_helper.from_array(np.array(0, np.int8), f"{name}.input_zero_point")]
    args = [f"{name}.input_scale", f"{name}.input_zero_point"]
    return [helper.make_node("QuantizeLinear", [x, *args], [f"{name}.input_int8"], name=f"/{name}/input/QuantizeLinear"),
            helper.make_node("DequantizeLinear", [f"{name}.input_int8", *args], [f"{name}.input_dq"],
                             name=f"/{name}/input/DequantizeLinear")]


def _float_type(model: onnx.ModelProto) -> int:
    """The graph's float type: that of its first float initializer (fp32 or fp16)."""
    for init in model.graph.initializer:
        if init.data_type in (TensorProto.FLOAT, TensorProto.FLOAT16) and len(init.dims) == 2:
            return init.data_type
    raise ValueError("the graph has no float weight to quantize")


def _copy(model: onnx.ModelProto) -> onnx.ModelProto:
    out = onnx.ModelProto()
    out.CopyFrom(model)
    return out
