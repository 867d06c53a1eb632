"""What one ONNX Runtime session's spinning threads cost the next session's run (a stream's pattern).

    python benchmarks/session_switch.py BUNDLE [--rounds 8] [--llm-steps 20] [--context 300]

Each ONNX Runtime session owns its intra-op threads, which spin for work after
a run returns. In `Pipeline.stream()` LLM decode steps and video decoder calls
alternate, so each decoder call starts while the LLM's threads still spin. For
`session.force_spinning_stop` 0 (ONNX Runtime's default) and 1 (the ort
backend's setting), prints the median ms of:
- a video decoder step call after a pause (alone);
- the same call right after `--llm-steps` LLM decode steps;
- the first-frame call and one step call right after LLM steps (a stream's first chunk);
- an LLM decode step followed by a little host work (sampling's share).
The sessions are the bundle's graphs with the thread count ONNX Runtime picks.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np
import onnxruntime as ort

from graph_step import feeds_for

from vp.runtime.bundle import Bundle


def session(path: Path, stop: str) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3
    options.add_session_config_entry("session.force_spinning_stop", stop)
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1e3


def measure(bundle: Path, stop: str, rounds: int, llm_steps: int, context: int) -> dict[str, float]:
    onnx = bundle / "onnx"
    llm = session(onnx / "llm.onnx", stop)
    first, step = session(onnx / "video_decoder_first.onnx", stop), session(onnx / "video_decoder_step.onnx", stop)
    lf = feeds_for(llm, context)
    grid = Bundle.open(bundle).geometry.video_grid[1:]  # the clip's latent rows and columns
    codes = np.random.default_rng(0).integers(0, 2, (1, 2, *grid))
    _, *state = first.run(None, {"codes": codes[:, :1]})
    step_feeds = {"codes": codes[:, 1:2], **{f"state_{i}": s for i, s in enumerate(state)}}
    times: dict[str, list[float]] = {"decoder step alone": [], "decoder step after LLM steps": [],
                                     "first + step after LLM steps": [], "LLM step + host work": []}
    for _ in range(rounds):
        time.sleep(0.05)
        times["decoder step alone"].append(timed(lambda: step.run(None, step_feeds)))
        for _ in range(llm_steps):
            llm.run(None, lf)
        times["decoder step after LLM steps"].append(timed(lambda: step.run(None, step_feeds)))
        for _ in range(llm_steps):
            times["LLM step + host work"].append(timed(lambda: (llm.run(None, lf), np.random.rand(20000).argmax())))
        times["first + step after LLM steps"].append(
            timed(lambda: (first.run(None, {"codes": codes[:, :1]}), step.run(None, step_feeds))))
    return {name: float(np.median(t)) for name, t in times.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("bundle", type=Path)
    parser.add_argument("--rounds", type=int, default=8)
    parser.add_argument("--llm-steps", type=int, default=20)
    parser.add_argument("--context", type=int, default=300)
    args = parser.parse_args()
    for stop in ("0", "1"):
        result = measure(args.bundle, stop, args.rounds, args.llm_steps, args.context)
        print(f"force_spinning_stop {stop}: " + "; ".join(f"{k} {v:.2f} ms" for k, v in result.items()))


if __name__ == "__main__":
    main()
