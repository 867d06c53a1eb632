"""The paged LLM graph's decode call alone (no runtime around it), for one or more llm.onnx files.

    python benchmarks/graph_step.py A/onnx/llm.onnx [B/onnx/llm.onnx ...] [--contexts 64,512,1024,1700]
                                    [--rounds 3] [--steps 30] [--head 0] [--block-sizes 32,128]

For comparing graphs across vp versions: the pool is shaped from each graph's own
inputs, so graphs of the earlier pool layouts (one `kv_pool` input, [num_blocks,
block_size, layers, 2, kv_heads, head_dim] or [layers, 2, kv_heads, num_blocks,
block_size, head_dim]) and of the current one (a K and a V plane per layer,
[kv_heads, num_blocks, block_size, head_dim] each) all run, and graphs with an output-head input
(format 6 on) compute the head `--head` (0: visual, 1: audio) where earlier
ones project onto the whole vocabulary. One sequence, one new token, a
shuffled block table, a pool of `--pool` token slots (default: the context and
two blocks); median ms of `steps` calls, best of `rounds` interleaved
rounds (every graph at every context per round), ONNX Runtime on all cores.
"""

from __future__ import annotations

import argparse
import time

import numpy as np
import onnxruntime as ort


def feeds_for(session, context: int, head: int, pool: int | None) -> dict[str, np.ndarray]:
    spec = {i.name: i for i in session.get_inputs()}
    pools = [name for name in spec if name == "kv_pool" or name.startswith(("k_pool.", "v_pool."))]
    pool_shape = spec[pools[0]].shape
    block = pool_shape[2] if len(pool_shape) == 4 else pool_shape[1] if isinstance(pool_shape[0], str) else pool_shape[4]
    blocks = max(context // block + 2, -(-(pool or 0) // block))
    rng = np.random.default_rng(0)
    dtype = np.float16 if spec[pools[0]].type == "tensor(float16)" else np.float32
    d_model = spec["input_embeds"].shape[2]
    feeds = {"head": np.array([head], np.int64)} if "head" in spec else {}
    feeds |= {name: rng.standard_normal([blocks if isinstance(d, str) else d for d in spec[name].shape]).astype(dtype)
              for name in pools}
    return feeds | dict(input_ids=np.array([[7]], np.int64), input_embeds=np.zeros((1, 1, d_model), dtype),
                embed_mask=np.zeros((1, 1), bool), position_ids=np.array([[context]], np.int64),
                block_table=np.random.default_rng(1).permutation(blocks)[None, :-(-context // block)].astype(np.int64),
                context_lens=np.array([context], np.int64), prefix_lens=np.array([16], np.int64))


def step_ms(session, feeds, steps: int) -> float:
    for _ in range(3):
        session.run(None, feeds)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        session.run(None, feeds)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("graphs", nargs="+")
    parser.add_argument("--contexts", default="64,512,1024,1700")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=30)
    parser.add_argument("--head", type=int, default=0, help="output head of graphs that take one: 0 visual, 1 audio")
    parser.add_argument("--pool", type=int, default=None,
                        help="token slots in the pool (default: the context and two blocks)")
    parser.add_argument("--accuracy-level", default="4",
                        help="session.qdq_matmulnbits_accuracy_level for int8 weight-only graphs (the ort backend's: 4)")
    parser.add_argument("--block-sizes", default="128",
                        help="session.qdq_matmulnbits_block_size for int8 weight-only graphs, comma-separated: "
                             "each graph opened once per size, timed in the same rounds (the ort backend's: 128)")
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    sessions = []
    for graph in args.graphs:
        for block in args.block_sizes.split(","):
            options = ort.SessionOptions()
            options.log_severity_level = 3
            options.add_session_config_entry("session.qdq_matmulnbits_accuracy_level", args.accuracy_level)
            options.add_session_config_entry("session.qdq_matmulnbits_block_size", block)
            sessions.append(ort.InferenceSession(graph, options, providers=["CPUExecutionProvider"]))
    best = {(g, c): float("inf") for g in range(len(sessions)) for c in contexts}
    for _ in range(args.rounds):
        for c in contexts:
            for g, session in enumerate(sessions):
                best[g, c] = min(best[g, c], step_ms(session, feeds_for(session, c, args.head, args.pool), args.steps))
    print(f"decode call of the graph, batch 1, median ms, best of {args.rounds} rounds of {args.steps} steps")
    print("context " + "".join(f"{i:>10}" for i in range(len(sessions)))
          + "   (graph index, in the order given, each graph once per block size)")
    for c in contexts:
        print(f"{c:7d} " + "".join(f"{best[g, c]:10.2f}" for g in range(len(sessions))))

if __name__ == "__main__":
    main()
