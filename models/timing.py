"""The torch side of `vp bench --compare torch`: the same work with the reference models.

What a user would run without vp: vp.models.reference.generate on the same
preset and weights, the same task, prompt and seeds, with torch limited to the
same number of threads. Stage names match vp.runtime.bench's table.
"""

from __future__ import annotations

import os
import time

import numpy as np
import torch

from vp.models.checkpoint import load
from vp.models.reference import generate
from vp.runtime.latency import summarize


def torch_timings(manifest, task, prompt: str, config, vp_run: dict) -> dict:
    """{"stages": {stage: stat}, "ratio": {stage: torch ms / vp ms}} for batch 1."""
    threads = int(os.environ.get("VP_THREADS", 0)) or os.cpu_count()
    torch.set_num_threads(threads)
    models = load(manifest.preset["name"], manifest.weights)
    runs = []
    for i in range(config.warmup + config.iters):
        timings: dict = {}
        start = time.perf_counter()
        generate(models, task=task, prompt=prompt, seed=config.seed + i, timings=timings)
        timings["total"] = (time.perf_counter() - start) * 1e3
        if i >= config.warmup:
            runs.append(timings)
    stages = {
        "prefill (TTFT)": summarize([r["llm_prefill"] for r in runs]),
        "decode step (TPOT)": summarize(np.concatenate([np.diff(r["decode_step_ends"]) * 1e3 for r in runs])),
        "end to end": summarize([r["total"] for r in runs]),
    }
    if prompt:
        stages["text encoder"] = summarize([r["text_encoder"] for r in runs])
    if vp_run["audio_decoder"] is not None:
        stages["audio decoder"] = summarize([r["audio_decoder"] for r in runs])
    vp_stages = {"prefill (TTFT)": vp_run["prefill"], "decode step (TPOT)": vp_run["decode"],
                 "end to end": vp_run["end_to_end"], "text encoder": vp_run["text_encoder"],
                 "audio decoder": vp_run["audio_decoder"]}
    ratio = {k: s["median_ms"] / vp_stages[k]["median_ms"] for k, s in stages.items()}
    return {"threads": threads, "torch": torch.__version__, "stages": stages, "ratio": ratio}
