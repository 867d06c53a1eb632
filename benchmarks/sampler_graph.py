"""The sampler graph (vp.export.sampler_graph) against the host sampler it mirrors, at a preset's vocabulary.

    python benchmarks/sampler_graph.py [--preset paper-1b] [--rows 160] [--batch 4] [--threads 2]

Exports the preset's sampler graph, runs it on ONNX Runtime's CPU provider
(the TensorRT path runs the same graph on the GPU) over the visual id range,
and draws the same rows on the host from the same uniform numbers (default
sampling: top-p 0.9, CFG 3). Logits are float32: "flat" 0.5 x N(0, 1) and
"peaked" 8 x N(0, 1). Prints, per kind, how many rows drew the host's id, how
many another (float32 against float64 cumulative sums), how many
the graph left to the host, and the median milliseconds of one graph call and
of the host's draw for the same batch.
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np


def main() -> None:
    import onnxruntime as ort

    from vp.export.contracts import sampler_contract
    from vp.export.onnx_export import export_component
    from vp.models.presets import get_preset
    from vp.runtime.sampling import DRAWS, SamplingConfig, graph_config, make_rng, sample_guided

    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="paper-1b")
    parser.add_argument("--rows", type=int, default=160, help="rows compared per kind of logits")
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    preset = get_preset(args.preset)
    contract = sampler_contract(preset)
    vocab = contract.input("logits").shape[1]
    low, high = preset.vocab.visual_range()
    config = SamplingConfig()
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "sampler.onnx"
        export_component(SimpleNamespace(preset=preset), contract, path)  # the graph reads no weights
        options = ort.SessionOptions()
        options.intra_op_num_threads = args.threads
        session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    gen = np.random.default_rng(0)
    print(f"{args.preset}: vocabulary {vocab}, visual ids [{low}, {high}), batch {args.batch}, "
          f"{args.threads} threads, top-p {config.top_p}, CFG {config.cfg_scale}")
    for kind, spread in (("flat", 0.5), ("peaked", 8.0)):
        same = near = left = 0
        graph_ms, host_ms = [], []
        for step in range(args.rows // args.batch):
            cond, uncond = (gen.standard_normal((2, args.batch, vocab)) * spread).astype(np.float32)
            seeds = range(step * args.batch, (step + 1) * args.batch)
            uniforms = np.stack([make_rng(s).random(DRAWS) for s in seeds]).astype(np.float32)
            feeds = dict(logits=np.concatenate([cond, uncond]), window=np.array([low, high], np.int64),
                         uniforms=uniforms, config=graph_config(config, guided=True))
            start = time.perf_counter()
            (ids,) = session.run(None, feeds)
            graph_ms.append((time.perf_counter() - start) * 1e3)
            start = time.perf_counter()
            host = sample_guided(cond, uncond, low=low, high=high, config=config, rngs=[make_rng(s) for s in seeds])
            host_ms.append((time.perf_counter() - start) * 1e3)
            drawn = ids >= 0
            left += int((~drawn).sum())
            same += int((ids[drawn] == host[drawn]).sum())
            near += int((ids[drawn] != host[drawn]).sum())
        print(f"  {kind:6s}  same id {same}, another id {near}, left to the host {left}; "
              f"graph {np.median(graph_ms):.2f} ms, host {np.median(host_ms):.2f} ms a call")


if __name__ == "__main__":
    main()
