"""What an `If`-selected output head costs on ONNX Runtime's CPU provider (issue 10's logit window).

    python benchmarks/head_window.py [--d-model 768] [--visual 16384] [--audio 4096] [--vocab 20736]

Times, per call (best of 3 rounds of 50, 2 threads), one hidden row times:
- the whole tied head [D, vocab] (what the LLM graph computes today);
- an `If` on a `head` input whose branches hold the visual [D, visual] or the
  audio [D, audio] columns (the audio logits padded to the visual width, as
  TensorRT-RTX needs equal branch shapes), weights local to each branch;
in fp32 and with int8 weights (DequantizeLinear + MatMul, which ONNX Runtime
fuses into MatMulNBits; it fails to when the weights are outer-graph
initializers, "Missing required weight").
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort
from onnx import TensorProto, helper, numpy_helper


def _weight(name: str, d: int, n: int, int8: bool, rng) -> tuple[list, list, str]:
    """(initializers, nodes, tensor name) of a [d, n] weight, int8 behind a DequantizeLinear or float."""
    w = (rng.standard_normal((d, n)) * 0.02).astype(np.float32)
    if not int8:
        return [numpy_helper.from_array(w, name)], [], name
    scale = np.abs(w).max(0) / 127
    inits = [numpy_helper.from_array(np.round(w / scale).astype(np.int8), f"{name}_int8"),
             numpy_helper.from_array(scale.astype(np.float32), f"{name}_scale")]
    return inits, [helper.make_node("DequantizeLinear", [f"{name}_int8", f"{name}_scale"], [f"{name}_dq"], axis=1)], f"{name}_dq"


def _branch(name: str, d: int, n: int, width: int, int8: bool, rng):
    inits, nodes, w = _weight(name, d, n, int8, rng)
    nodes.append(helper.make_node("MatMul", ["h", w], [f"{name}_logits"]))
    out = f"{name}_logits"
    if n < width:
        inits.append(numpy_helper.from_array(np.array([0, 0, 0, width - n], np.int64), f"{name}_pads"))
        nodes.append(helper.make_node("Pad", [out, f"{name}_pads"], [f"{name}_padded"]))
        out = f"{name}_padded"
    return helper.make_graph(nodes, name, [], [helper.make_tensor_value_info(out, TensorProto.FLOAT, [1, width])], inits)


def _inputs(d: int):
    return [helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, d]),
            helper.make_tensor_value_info("head", TensorProto.INT64, [1])]


def if_head(d: int, visual: int, audio: int, int8: bool, rng):
    nodes = [helper.make_node("Equal", ["head", "zero"], ["is_visual_1"]),
             helper.make_node("Squeeze", ["is_visual_1"], ["is_visual"]),
             helper.make_node("If", ["is_visual"], ["logits"], then_branch=_branch("visual", d, visual, visual, int8, rng),
                              else_branch=_branch("audio", d, audio, visual, int8, rng))]
    graph = helper.make_graph(nodes, "if_head", _inputs(d), [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, visual])],
                              [numpy_helper.from_array(np.array([0], np.int64), "zero")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def full_head(d: int, vocab: int, int8: bool, rng):
    inits, nodes, w = _weight("table", d, vocab, int8, rng)
    nodes.append(helper.make_node("MatMul", ["h", w], ["logits"]))
    graph = helper.make_graph(nodes, "full_head", _inputs(d),
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, vocab])], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)])


def session(model) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 2
    options.log_severity_level = 3
    options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", "4")
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--d-model", type=int, default=768)
    parser.add_argument("--visual", type=int, default=16384)
    parser.add_argument("--audio", type=int, default=4096)
    parser.add_argument("--vocab", type=int, default=20736)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    h = rng.standard_normal((1, args.d_model)).astype(np.float32)
    for int8 in (False, True):
        full = session(full_head(args.d_model, args.vocab, int8, rng))
        selected = session(if_head(args.d_model, args.visual, args.audio, int8, rng))
        cases = {"full head": (full, 0), "If, visual branch": (selected, 0), "If, audio branch": (selected, 1)}
        best = {}
        for _ in range(3):
            for name, (s, head) in cases.items():
                feeds = {"h": h, "head": np.array([head], np.int64)}
                for _ in range(5):
                    s.run(None, feeds)
                start = time.perf_counter()
                for _ in range(50):
                    s.run(None, feeds)
                best[name] = min(best.get(name, np.inf), (time.perf_counter() - start) / 50 * 1e3)
        print(("int8 weights" if int8 else "fp32") + ": " + "; ".join(f"{k} {v:.3f} ms" for k, v in best.items()))


if __name__ == "__main__":
    main()
