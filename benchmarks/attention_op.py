"""One layer's decode attention on ONNX Runtime's CPU provider: vp's graph against the ONNX Attention op.

    python benchmarks/attention_op.py [--context 1700] [--heads 12] [--kv-heads 4] [--head-dim 64]

Times, per call (median of 400, best of 3 rounds, 2 threads), one new query
over `context` past keys gathered from the pool (padded to whole blocks of 16)
plus its own key, masked:
- vp: the subgraph vp.export.llm_graph traces (scores against the past and
  the new key by two MatMuls, Concat, Div, Where, Softmax, two Slices, two
  MatMuls, Add): no copy of the past K/V;
- the ONNX Attention op (opset 23, grouped-query heads, a bool mask) with
  past_key/past_value inputs: ONNX Runtime's CPU kernel requires the
  present_key/present_value outputs then, and concatenates past and new;
- the Attention op over one K/V buffer that already holds the new key (what a
  graph that wrote the new K/V into the gathered blocks before attention
  would run);
and what comes before any of them in vp's graph: the Gather of the layer's
past K and V blocks out of a pool of 12 layers (one Gather each, as
vp.export.llm_graph does), which copies them.
The outputs agree to float32 rounding (printed).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _value(name, shape, kind=TensorProto.FLOAT):
    return helper.make_tensor_value_info(name, kind, shape)


def _constant(name, value):
    return helper.make_node("Constant", [], [name], value=numpy_helper.from_array(np.array(value), f"{name}.value"))


def vp_subgraph(b, kvh, group, s, hd):
    """vp's attention over past [b, kvh, s, hd] and one new key, query rows grouped per KV head."""
    nodes = [helper.make_node("Transpose", ["past_k"], ["past_kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "past_kt"], ["s_past"]),
             helper.make_node("Transpose", ["k"], ["kt"], perm=[0, 1, 3, 2]),
             helper.make_node("MatMul", ["q", "kt"], ["s_new"]),
             helper.make_node("Concat", ["s_past", "s_new"], ["scores"], axis=-1),
             _constant("root", np.float32(np.sqrt(hd))), helper.make_node("Div", ["scores", "root"], ["scaled"]),
             _constant("neg_inf", np.float32(-np.inf)), helper.make_node("Where", ["mask", "scaled", "neg_inf"], ["masked"]),
             helper.make_node("Softmax", ["masked"], ["weights"], axis=-1),
             _constant("s", [s]), _constant("s1", [s + 1]), _constant("zero", [0]), _constant("axis", [3]),
             helper.make_node("Slice", ["weights", "s", "s1", "axis"], ["w_new"]),
             helper.make_node("Slice", ["weights", "zero", "s", "axis"], ["w_past"]),
             helper.make_node("MatMul", ["w_new", "v"], ["o_new"]),
             helper.make_node("MatMul", ["w_past", "past_v"], ["o_past"]),
             helper.make_node("Add", ["o_new", "o_past"], ["out"])]
    inputs = [_value("q", [b, kvh, group, hd]), _value("past_k", [b, kvh, s, hd]), _value("past_v", [b, kvh, s, hd]),
              _value("k", [b, kvh, 1, hd]), _value("v", [b, kvh, 1, hd]), _value("mask", [b, 1, 1, s + 1], TensorProto.BOOL)]
    return helper.make_model(helper.make_graph(nodes, "vp", inputs, [_value("out", [b, kvh, group, hd])]),
                             opset_imports=[helper.make_opsetid("", 18)])


def attention_op(b, heads, kvh, s, hd, past: bool):
    """The opset-23 Attention op: with past_key/past_value (and the present outputs its CPU kernel
    needs then), or over one buffer of s + 1 keys."""
    common = dict(q_num_heads=heads, kv_num_heads=kvh, scale=float(1 / np.sqrt(hd)))
    if past:
        node = helper.make_node("Attention", ["q", "k", "v", "mask", "past_k", "past_v"], ["out", "present_k", "present_v"],
                                **common)
        inputs = [_value("q", [b, heads, 1, hd]), _value("k", [b, kvh, 1, hd]), _value("v", [b, kvh, 1, hd]),
                  _value("mask", [b, 1, 1, s + 1], TensorProto.BOOL), _value("past_k", [b, kvh, s, hd]),
                  _value("past_v", [b, kvh, s, hd])]
        outputs = [_value("out", [b, heads, 1, hd]), _value("present_k", [b, kvh, s + 1, hd]),
                   _value("present_v", [b, kvh, s + 1, hd])]
    else:
        node = helper.make_node("Attention", ["q", "all_k", "all_v", "mask"], ["out"], **common)
        inputs = [_value("q", [b, heads, 1, hd]), _value("all_k", [b, kvh, s + 1, hd]), _value("all_v", [b, kvh, s + 1, hd]),
                  _value("mask", [b, 1, 1, s + 1], TensorProto.BOOL)]
        outputs = [_value("out", [b, heads, 1, hd])]
    return helper.make_model(helper.make_graph([node], "attention", inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 23)])


def pool_gather(layers, kvh, blocks, hd):
    """The past K and V of layer 0 gathered out of the pool [layers, 2, kvh, blocks, 16, hd] by block
    indices [1, kvh, blocks] (K planes) and the same + kvh * blocks (V planes)."""
    nodes = [_constant("shape", [-1, 16, hd]), helper.make_node("Reshape", ["pool", "shape"], ["rows"]),
             helper.make_node("Gather", ["rows", "k_index"], ["k_blocks"], axis=0),
             helper.make_node("Gather", ["rows", "v_index"], ["v_blocks"], axis=0),
             _constant("past", [1, kvh, -1, hd]), helper.make_node("Reshape", ["k_blocks", "past"], ["out"]),
             helper.make_node("Reshape", ["v_blocks", "past"], ["past_v"])]
    inputs = [_value("pool", [layers, 2, kvh, blocks, 16, hd]), _value("k_index", [1, kvh, blocks], TensorProto.INT64),
              _value("v_index", [1, kvh, blocks], TensorProto.INT64)]
    return helper.make_model(helper.make_graph(nodes, "gather", inputs, [_value("out", [1, kvh, None, hd]),
                                                                          _value("past_v", [1, kvh, None, hd])]),
                             opset_imports=[helper.make_opsetid("", 18)])


def timed(session, feeds, calls=400, rounds=3) -> float:
    best = float("inf")
    for _ in range(rounds):
        for _ in range(20):
            session.run(["out"], feeds)
        times = []
        for _ in range(calls):
            start = time.perf_counter()
            session.run(["out"], feeds)
            times.append(time.perf_counter() - start)
        best = min(best, float(np.median(times)) * 1e3)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--context", type=int, default=1700)
    parser.add_argument("--heads", type=int, default=12)
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    b, heads, kvh, hd = 1, args.heads, args.kv_heads, args.head_dim
    s = -(-args.context // 16) * 16  # the gathered blocks
    rng = np.random.default_rng(0)
    q = rng.standard_normal((b, heads, 1, hd)).astype(np.float32)
    past_k, past_v = rng.standard_normal((2, b, kvh, s, hd)).astype(np.float32)
    k, v = rng.standard_normal((2, b, kvh, 1, hd)).astype(np.float32)
    mask = np.ones((b, 1, 1, s + 1), bool)
    mask[..., args.context:s] = False  # the unused slots of the last block
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    cases = {
        "vp subgraph": (vp_subgraph(b, kvh, heads // kvh, s, hd),
                        dict(q=q.reshape(b, kvh, heads // kvh, hd), past_k=past_k, past_v=past_v, k=k, v=v, mask=mask)),
        "Attention op, past inputs": (attention_op(b, heads, kvh, s, hd, past=True),
                                      dict(q=q, k=k, v=v, mask=mask, past_k=past_k, past_v=past_v)),
        "Attention op, one buffer": (attention_op(b, heads, kvh, s, hd, past=False),
                                     dict(q=q, all_k=np.concatenate([past_k, k], 2), all_v=np.concatenate([past_v, v], 2),
                                          mask=mask)),
    }
    blocks = s // 16
    table = rng.permutation(blocks)
    k_index = (np.arange(kvh)[:, None] * blocks + table[None])[None]
    pool = rng.standard_normal((12, 2, kvh, blocks, 16, hd)).astype(np.float32)
    cases["Gather of past K and V"] = (pool_gather(12, kvh, blocks, hd),
                                       dict(pool=pool, k_index=k_index, v_index=k_index + kvh * blocks))
    sessions = {name: ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
                for name, (model, _) in cases.items()}
    reference = sessions["vp subgraph"].run(["out"], cases["vp subgraph"][1])[0].reshape(b, heads, 1, hd)
    print(f"one layer's decode attention, context {args.context} ({s} gathered), {heads} heads, {kvh} KV heads, "
          f"head dim {hd}, 2 threads: ms per call (median of 400, best of 3)")
    for name, session in sessions.items():
        feeds = cases[name][1]
        if name.startswith("Gather"):
            gathered = session.run(["out"], feeds)[0]
            error = np.abs(gathered[0, :, :16] - pool[0, 0, :, table[0]]).max()  # the first block of each head
        else:
            error = np.abs(session.run(["out"], feeds)[0].reshape(b, heads, 1, hd) - reference).max()
        print(f"  {name:28s} {timed(session, feeds):7.3f} ms   max |difference| {error:.1e}")


if __name__ == "__main__":
    main()
