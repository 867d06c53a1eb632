"""Host sampling cost per sequence and step at a vocabulary range of 2^18 ids (the paper's visual ids).

    python benchmarks/sampling.py [--width 262144] [--batch 4] [--repeats 30]

Logits are float32 [batch, width]: "flat" N(0, 1) (the 256 most likely ids hold
far less than top-p of the mass) and "peaked" 8 x N(0, 1). Prints the median
milliseconds per sequence of one `vp.runtime.sampling.sample` call over the whole
batch (CFG mixing excluded), for top-p 0.9 and for greedy.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from vp.runtime.sampling import SamplingConfig, make_rng, sample


def per_sequence_ms(logits: np.ndarray, config: SamplingConfig, repeats: int) -> float:
    rngs = [make_rng(i) for i in range(len(logits))]
    sample(logits, low=0, high=logits.shape[1], config=config, rngs=rngs)  # warm-up
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        sample(logits, low=0, high=logits.shape[1], config=config, rngs=rngs)
        times.append(time.perf_counter() - start)
    return float(np.median(times)) * 1e3 / len(logits)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--width", type=int, default=2**18)
    parser.add_argument("--batch", type=int, default=4)
    parser.add_argument("--repeats", type=int, default=30)
    args = parser.parse_args()
    gen = np.random.default_rng(0)
    configs = {"top-p 0.9": SamplingConfig(top_p=0.9), "greedy": SamplingConfig(temperature=0, top_p=1.0)}
    print(f"width {args.width}, batch {args.batch}: ms per sequence per step (median of {args.repeats})")
    for shape, scale in (("flat", 1.0), ("peaked", 8.0)):
        logits = (gen.standard_normal((args.batch, args.width)) * scale).astype(np.float32)
        cells = [f"{name} {per_sequence_ms(logits, config, args.repeats):.3f}" for name, config in configs.items()]
        print(f"  {shape:6s}  " + "   ".join(cells))


if __name__ == "__main__":
    main()
