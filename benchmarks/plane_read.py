"""Reading a layer's K (or V) plane of the KV pool where it lies, on ONNX Runtime's CPU provider.

    python benchmarks/plane_read.py [--slots 1744] [--kv-heads 4] [--group 3] [--head-dim 64]

One decode step's products with one plane [kv_heads, slots, head_dim], timed
over 24 planes in one graph (one per node: 24 x 1.8 MB at the defaults, more
than the cache holds, as the 24 planes of a 12-layer pool are), median of 100
runs, 2 threads, microseconds per plane:
- scores, a KV head's `group` query rows at once: [kvh, group, hd] x plane^T
  (a FusedMatMul with transB, what ONNX Runtime makes of MatMul(q, Transpose));
- scores per query head: [kvh, group, 1, hd] x [kvh, 1, hd, slots], each a
  matrix-vector product (vp.export.llm_graph's decode step);
- scores with the plane as the left operand: plane x q^T;
- weights times V, the rows at once and per query head;
- the Gather of whole blocks (16 slots) of a plane, what the graph did before
  it read the pool in place (a copy, which the product then reads again).
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper

PLANES = 24


def graph(kind: str, kvh: int, group: int, slots: int, hd: int):
    """24 nodes of `kind`, each over its own plane input p0..p23, sharing the small operand x."""
    plane = [kvh, slots, hd]
    small = {"qk_rows": [kvh, group, hd], "qk_heads": [kvh, group, 1, hd], "kq": [kvh, hd, group],
             "wv_rows": [kvh, group, slots], "wv_heads": [kvh, group, 1, slots], "gather": [slots // 16]}[kind]
    nodes, inputs = [], [helper.make_tensor_value_info("x", TensorProto.INT64 if kind == "gather" else TensorProto.FLOAT,
                                                        small)]
    for i in range(PLANES):
        p, y = f"p{i}", f"y{i}"
        if kind == "gather":
            inputs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, [kvh, slots // 16, 16 * hd]))
            nodes.append(helper.make_node("Gather", [p, "x"], [y], axis=1))
            continue
        shape = [kvh, 1, slots, hd] if kind.endswith("heads") else plane
        inputs.append(helper.make_tensor_value_info(p, TensorProto.FLOAT, shape))
        if kind.startswith("qk"):
            nodes.append(helper.make_node("FusedMatMul", ["x", p], [y], domain="com.microsoft", transB=1))
        elif kind == "kq":
            nodes.append(helper.make_node("MatMul", [p, "x"], [y]))
        else:
            nodes.append(helper.make_node("MatMul", ["x", p], [y]))
    outputs = [helper.make_tensor_value_info(f"y{i}", TensorProto.FLOAT, None) for i in range(PLANES)]
    return helper.make_model(helper.make_graph(nodes, kind, inputs, outputs),
                             opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("com.microsoft", 1)])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--slots", type=int, default=1744, help="slots of the plane (whole blocks of 16)")
    parser.add_argument("--kv-heads", type=int, default=4)
    parser.add_argument("--group", type=int, default=3, help="query heads per KV head")
    parser.add_argument("--head-dim", type=int, default=64)
    args = parser.parse_args()
    kvh, group, slots, hd = args.kv_heads, args.group, args.slots, args.head_dim
    rng = np.random.default_rng(0)
    pool = rng.standard_normal((PLANES, kvh, slots, hd)).astype(np.float32)
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    print(f"one plane [{kvh}, {slots}, {hd}] float32 ({pool[0].nbytes / 1e6:.2f} MB), {group} query heads per KV head, "
          f"{PLANES} planes a run, 2 threads: microseconds per plane (median of 100 runs)")
    for kind, what in (("qk_rows", "scores, a KV head's rows at once"), ("qk_heads", "scores per query head"),
                       ("kq", "scores, plane x q^T"), ("wv_rows", "weights x V, rows at once"),
                       ("wv_heads", "weights x V per query head"), ("gather", "Gather of whole blocks (a copy)")):
        model = graph(kind, kvh, group, slots, hd)
        session = ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])
        small = session.get_inputs()[0]
        x = (rng.permutation(slots // 16) if kind == "gather"
             else rng.standard_normal(small.shape).astype(np.float32))
        feeds = {"x": x}
        for i in range(PLANES):
            plane = pool[i]
            feeds[f"p{i}"] = (plane.reshape(kvh, slots // 16, 16 * hd) if kind == "gather"
                              else plane[:, None] if kind.endswith("heads") else plane)
        for _ in range(10):
            session.run(None, feeds)
        times = []
        for _ in range(100):
            start = time.perf_counter()
            session.run(None, feeds)
            times.append(time.perf_counter() - start)
        per_plane = float(np.median(times)) / PLANES
        print(f"  {what:36s} {per_plane * 1e6:7.1f} us   ({pool[0].nbytes / per_plane / 1e9:5.1f} GB/s of the plane)")


if __name__ == "__main__":
    main()
