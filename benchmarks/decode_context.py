"""The LLM decode step against the context: one sequence, one new token, over the paged KV cache.

    python benchmarks/decode_context.py BUNDLE [--contexts 64,512,1024,1700] [--rounds 3] [--steps 40]

Opens the bundle's LLM with ONNX Runtime (the `ort` backend, the threads ONNX
Runtime picks: all cores), fills the pool for a sequence of each context (the
K/V values do not change the cost; the pool holds that sequence's blocks, as
in a run started alone, whatever context was timed before), then times decode calls (`PagedLLM.forward`:
the graph and the commit of the new K/V, no sampling) advancing the context by one
each time. Prints the median ms per step for each context, best of `rounds`
interleaved rounds, and the read-bandwidth floor (weights + the context's K/V
once, at the host's read bandwidth, vp.runtime.memory_floor). The bandwidth is
probed at the start of every round and each round's steps are held to its own
probe: on a shared machine both move by 10-30% within minutes.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vp.engines.precision import QUANTIZED
from vp.runtime.backends import open_backend
from vp.runtime.backends.base import LLMBatch
from vp.runtime.bundle import Bundle
from vp.runtime.memory_floor import kv_bytes, llm_weight_bytes, host_read_bandwidth_gbs


def step_ms(llm, d_model: int, context: int, steps: int) -> float:
    block = llm.layout.block_size
    blocks = -(-(context + steps) // block)
    table = np.arange(blocks, dtype=np.int64)[None]
    llm.fit(blocks)  # as a run started alone: the pool holds this sequence's blocks, not an earlier context's
    times = []
    for i in range(steps):
        position = context + i
        batch = LLMBatch(input_ids=np.array([[7]], np.int64), input_embeds=np.zeros((1, 1, d_model), np.float32),
                         embed_mask=np.zeros((1, 1), bool), position_ids=np.array([[position]], np.int64),
                         block_table=table, context_lens=np.array([position], np.int64),
                         prefix_lens=np.array([16], np.int64), head=np.array([0], np.int64),
                         slots=np.array([[position]], np.int64))
        start = time.perf_counter()
        llm.forward(batch)
        times.append(time.perf_counter() - start)
    return float(np.median(times[3:])) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle")
    parser.add_argument("--contexts", default="64,512,1024,1700")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--steps", type=int, default=40)
    args = parser.parse_args()
    contexts = [int(c) for c in args.contexts.split(",")]
    bundle = Bundle.open(args.bundle)
    backend, _ = open_backend("ort", bundle)
    llm_spec = bundle.manifest.preset["llm"]
    block = backend.paged_llm(1).layout.block_size
    llm = backend.paged_llm(-(-(max(contexts) + args.steps) // block))
    itemsize = np.dtype(llm.dtype).itemsize
    precision = bundle.manifest.components["llm"].precision
    weight_itemsize = 1 if precision in QUANTIZED else itemsize  # int8 weights
    low, high = bundle.vocab.heads()[0]  # the steps compute the visual head (step_ms: head 0)
    floor_bytes = {c: llm_weight_bytes(llm_spec, weight_itemsize, high - low) + kv_bytes(llm_spec, c, 1, itemsize)
                   for c in contexts}
    steps = {c: [] for c in contexts}
    ratios = {c: [] for c in contexts}
    probes = []
    for _ in range(args.rounds):
        probes.append(host_read_bandwidth_gbs() * 1e9)  # each round against its own minute's bandwidth
        for c in contexts:
            steps[c].append(step_ms(llm, llm_spec["d_model"], c, args.steps))
            ratios[c].append(steps[c][-1] / (floor_bytes[c] / probes[-1] * 1e3))
    block = bundle.manifest.components["llm"].cpu_kernel_block
    kernels = f", CPU kernels' K block {block}" if block else ""
    print(f"{args.bundle} ({precision}{kernels}): decode step, batch 1, ms (best of {args.rounds} rounds of "
          f"{args.steps} steps); read bandwidth {min(probes) / 1e9:.1f}-{max(probes) / 1e9:.1f} GB/s over the rounds")
    print("  the floor at the median bandwidth; the ratio: step / floor within each round, median [min-max]")
    median = float(np.median(probes))
    for c in contexts:
        r = np.array(ratios[c])
        print(f"  context {c:5d}: {min(steps[c]):6.2f} ms   floor {floor_bytes[c] / median * 1e3:5.2f} ms   "
              f"ratio {np.median(r):.2f} [{r.min():.2f}-{r.max():.2f}]")

if __name__ == "__main__":
    main()
