"""`vp bench`: per-stage and end-to-end latency of a bundle, against the physical floor.

Every figure is a median (with p90/p99 where a distribution makes sense) over
`iters` measured runs after `warmup` runs that are thrown away. The report is a
dict that `--json` writes as is; its schema is vp.runtime.bench_report.SCHEMA
(docs/benchmarks.md). The floor of a decode step: vp.runtime.memory_floor, at
the bandwidth of the device the backend computes on.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from vp.engines.precision import QUANTIZED
from vp.runtime.bench_report import SCHEMA_VERSION
from vp.runtime.latency import summarize, time_calls
from vp.runtime.memory_floor import (
    gpu_bandwidth_gbs, gpu_memory_used_bytes, host_read_bandwidth_gbs, kv_bytes, llm_weight_bytes,
)
from vp.runtime.pipeline import Pipeline
from vp.runtime.process_memory import peak_rss_mb
from vp.runtime.video_stream import VideoDecodeStream
from vp.runtime.vocab import Task
_PROMPT_WORD = "fox"  # one tokenizer token per repetition (BERT and T5 vocabularies)


@dataclass(frozen=True, kw_only=True)
class BenchConfig:
    """batch: samples per generation (each with its CFG branch); prompt_len: text tokens."""

    bundle: str
    backend: str = "auto"
    task: str = "t2v"
    batch: tuple[int, ...] = (1,)
    prompt_len: int = 16
    warmup: int = 1
    iters: int = 3
    seed: int = 0
    compare_torch: bool = False
    share_samples: int = 4


def _prompt(pipeline: Pipeline, length: int) -> str:
    """A prompt of `length` text tokens (special tokens included)."""
    words = max(length - 2, 1)
    prompt = " ".join([_PROMPT_WORD] * words)
    got = pipeline.bundle.tokenizer.tokenize([prompt]).ids.shape[1]
    if got != length:
        raise ValueError(f"cannot make a prompt of {length} text tokens with this tokenizer "
                         f"({words} words give {got}); use --prompt-len 3 to 64")
    return prompt


def _machine(bandwidth: float) -> dict:
    cpu = platform.processor()
    try:
        for line in open("/proc/cpuinfo"):
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    from vp.runtime.backends.cuda import gpu_compute_capability

    return {"cpu": cpu, "cores": os.cpu_count(), "platform": platform.platform(),
            "gpu_compute_capability": gpu_compute_capability(), "memory_bandwidth_gbs": bandwidth}


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version

    out = {}
    for package in ("vp", "numpy", "onnxruntime", "tensorrt", "tensorrt-rtx-cu13", "torch"):
        try:
            out[package] = version(package)
        except PackageNotFoundError:
            out[package] = None
    return out


def run_bench(config: BenchConfig, progress: Callable[[str], None] = lambda s: None) -> dict:
    """Measure the bundle; returns the report (see SCHEMA)."""
    task = Task(config.task)
    if config.warmup < 0 or config.iters < 1:
        raise ValueError(f"need warmup >= 0 and iters >= 1, got {config.warmup} and {config.iters}")
    if not 1 <= config.prompt_len <= 64:
        raise ValueError(f"prompt_len must lie in [1, 64], got {config.prompt_len}")
    if task not in {Task.TEXT_TO_VIDEO, Task.TEXT_TO_IMAGE, Task.UNCONDITIONAL}:
        raise ValueError(f"vp bench measures t2v, t2i and uncond (tasks without media inputs), not {task.value}")
    progress("host memory bandwidth")
    host = host_read_bandwidth_gbs()
    gpu_before = gpu_memory_used_bytes()
    start = time.perf_counter()
    with Pipeline.load(config.bundle, backend=config.backend) as pipeline:
        return _measure(pipeline, config, task, host, gpu_before, start, progress)


def _measure(pipeline: Pipeline, config: BenchConfig, task: Task, host: float, gpu_before: int | None,
             start: float, progress: Callable[[str], None]) -> dict:
    for component in pipeline.bundle.manifest.components:
        if component not in ("llm", "sampler"):  # the LLM's backend opens the sampler where it uses it
            pipeline.session(component)
    load_ms = (time.perf_counter() - start) * 1e3
    b = pipeline.bundle
    manifest = b.manifest
    precision = manifest.components["llm"].precision
    itemsize = 2 if pipeline.backend.float_type("llm") == "fp16" else 4  # of the K/V (and float weights)
    bandwidth = host
    if pipeline.backend.on_gpu:  # the decode step reads the GPU's memory: its floor is the GPU's
        progress("GPU memory bandwidth")
        bandwidth = gpu_bandwidth_gbs()
    prompt = _prompt(pipeline, config.prompt_len) if task is not Task.UNCONDITIONAL else ""
    runs = [_bench_batch(pipeline, task, prompt, batch, config, bandwidth, itemsize, progress)
            for batch in config.batch]
    stream = _bench_stream(pipeline, task, prompt, config, progress)
    progress(f"prefix sharing ({config.share_samples} samples)")
    shared = pipeline.generate(task=task, prompt=prompt, seed=config.seed, num_samples=config.share_samples)
    st = shared.kv_stats
    gpu = None
    if pipeline.backend.on_gpu and gpu_before is not None:
        gpu = {"used_mb": (gpu_memory_used_bytes() - gpu_before) / 1e6, "memory_bandwidth_gbs": bandwidth}
    report = {
        "schema_version": SCHEMA_VERSION,
        "machine": _machine(host),
        "versions": _versions(),
        "bundle": {"path": str(b.path), "preset": b.name, "precision": precision,
                   "engines": next(iter(manifest.engines.values())).flavour if manifest.engines else None,
                   "build_seconds": {k: e.build_seconds for k, e in manifest.engines.items()}},
        "backend": pipeline.backend.name,
        "backend_reason": pipeline.backend_reason,
        "task": task.value,
        "prompt_tokens": config.prompt_len if prompt else 0,
        "warmup": config.warmup,
        "iters": config.iters,
        "seed": config.seed,
        "threads": int(os.environ.get("VP_THREADS", 0)) or os.cpu_count(),
        "load_ms": load_ms,
        "runs": runs,
        "stream": stream,
        "sharing": {"samples": config.share_samples, "cfg": b.sampling.for_task(task).guided and bool(prompt),
                    "saved_blocks": st.saved_blocks,
                    "saved_bytes": st.saved_blocks * pipeline.kv_block_bytes,
                    "saving_share": st.saved_blocks / (st.saved_blocks + st.allocated_blocks)},
        "memory": {"peak_rss_mb": peak_rss_mb(), "kv_pool_mb": pipeline.kv_pool_bytes / 1e6, "gpu": gpu},
        "compare_torch": None,
    }
    if config.compare_torch:
        progress("torch reference")
        from vp.models.timing import torch_timings

        report["compare_torch"] = torch_timings(manifest, task, prompt, config, runs[0])
    return report


def _bench_batch(pipeline, task, prompt, batch, config, bandwidth, itemsize, progress) -> dict:
    b = pipeline.bundle
    results = []
    for i in range(config.warmup + config.iters):
        progress(f"batch {batch}: run {i + 1}/{config.warmup + config.iters}" + (" (warm-up)" if i < config.warmup else ""))
        result = pipeline.generate(task=task, prompt=prompt, seed=config.seed + i, num_samples=batch)
        if i >= config.warmup:
            results.append(result)
    layout = results[0].layout
    sequences = batch * (2 if len(layout.prefix) and b.sampling.for_task(task).guided and prompt else 1)
    steps, backend = decode_steps(results)
    tpot = summarize(steps)
    llm = b.manifest.preset["llm"]
    mean_context = (layout.prefix_len + layout.total_len) / 2
    weight_itemsize = 1 if b.manifest.components["llm"].precision in QUANTIZED else itemsize  # int8 weights
    heads = b.vocab.heads()
    widths = [heads[b.vocab.head_of(low, high)] for forced, low, high in layout.positions() if forced < 0]
    head_columns = float(np.mean([high - low for low, high in widths])) if widths else None
    weight_bytes = llm_weight_bytes(llm, weight_itemsize, head_columns)
    step_bytes = weight_bytes + kv_bytes(llm, mean_context, sequences, itemsize)
    floor_ms = step_bytes / (bandwidth * 1e9) * 1e3
    t = lambda stage: [r.timings.get(stage, 0.0) for r in results]  # noqa: E731
    latent_frames = layout.video_grid[0] if layout.video_grid else 0
    media_seconds = batch * (b.manifest.clip["frames"] / b.media.fps if latent_frames > 1 else 0)
    total = np.asarray(t("total"))
    run = {
        "batch": batch,
        "sequences": sequences,
        "prefix_len": layout.prefix_len,
        "output_len": layout.output_len,
        "text_encoder": summarize(t("text_encoder")) if prompt else None,
        "prefill": summarize(t("llm_prefill")),
        "decode": {**tpot, "p50_ms": tpot["median_ms"], "tokens_per_s": 1e3 * batch / tpot["median_ms"],
                   "context_from": layout.prefix_len, "context_to": layout.total_len},
        "overhead_share": float(np.median((steps - backend) / steps)),
        "floor": {"weight_bytes": weight_bytes, "step_bytes": step_bytes,
                  "floor_ms": floor_ms, "ratio": tpot["median_ms"] / floor_ms, "bandwidth_gbs": bandwidth,
                  "device": "gpu" if pipeline.backend.on_gpu else "host"},
        "video_decoder_ms_per_latent_frame": (float(np.median(t("video_decoder"))) / latent_frames / batch
                                              if latent_frames else None),
        "audio_decoder": summarize(t("audio_decoder")) if layout.audio_frames else None,
        "end_to_end": summarize(total),
        "real_time_factor": float(media_seconds / (np.median(total) / 1e3)) if media_seconds else None,
        "kv": asdict(results[-1].kv_stats),
        "superres": _bench_superres(pipeline, layout, config) if b.superres_stages and task is
        Task.TEXT_TO_VIDEO and batch == config.batch[0] else None,
    }
    return run


def _bench_stream(pipeline, task, prompt, config, progress) -> dict | None:
    """Pipeline.stream (one sample): the time from the call to its first frames, and the video decoding
    it does (every latent frame once, vp.runtime.video_stream) against one whole-clip decode."""
    grid = pipeline.bundle.geometry.video_grid
    if task is not Task.TEXT_TO_VIDEO or grid[0] < 2:
        return None
    first = []
    for i in range(config.warmup + config.iters):
        progress(f"stream: run {i + 1}/{config.warmup + config.iters}" + (" (warm-up)" if i < config.warmup else ""))
        start = time.perf_counter()
        chunks = pipeline.stream(task=task, prompt=prompt, seed=config.seed + i)
        next(chunks)
        if i >= config.warmup:
            first.append((time.perf_counter() - start) * 1e3)
        chunks.close()
    codes = np.random.default_rng(config.seed).integers(0, pipeline.bundle.vocab.visual_codes, grid)
    sessions = pipeline.session("video_decoder_first"), pipeline.session("video_decoder_step")

    def streamed():
        decoder = VideoDecodeStream(*sessions, *grid[1:])
        for latent_frame in codes:
            decoder.push(latent_frame)

    whole = time_calls(lambda: pipeline.decode_video(codes), config.warmup, config.iters)
    stepped = time_calls(streamed, config.warmup, config.iters)
    return {"time_to_first_frame": summarize(first), "decode_whole_clip": whole, "decode_streamed": stepped,
            "decode_ratio": stepped["median_ms"] / whole["median_ms"]}


def decode_steps(results) -> tuple[np.ndarray, np.ndarray]:
    """(wall ms, engine ms) of each decode step: from the end of one feed to the end of the
    next one-token feed (sampling included), over all runs."""
    walls, engines = [], []
    for r in results:
        ends, tokens, backend = (np.asarray(x) for x in (r.loop.step_ends, r.loop.step_tokens, r.loop.backend_ms))
        single = tokens[1:] == 1
        walls.append(np.diff(ends)[single] * 1e3)
        engines.append(backend[1:][single])
    return np.concatenate(walls), np.concatenate(engines)


def _bench_superres(pipeline, layout, config) -> dict | None:
    """Every SR stage on random low-res codes of the clip's grid, without text: ms in all and per step;
    then the frames of its output (decoded, and fused where the bundle has sr_fusion)."""
    b = pipeline.bundle
    low = tuple(b.manifest.preset["superres"][0]["low_res_grid"])
    if tuple(layout.video_grid) != low:
        return None
    codes = np.random.default_rng(config.seed).integers(0, b.vocab.visual_codes, low)
    stat = time_calls(lambda: pipeline.super_resolve(codes), config.warmup, config.iters)
    steps = sum(s["steps"] for s in b.manifest.preset["superres"])
    high = pipeline.super_resolve(codes)
    frames = time_calls(lambda: pipeline.upscaled_frames(codes, high), config.warmup, config.iters)
    return {"all_stages": stat, "stages": len(b.superres_stages), "ms_per_step": stat["median_ms"] / steps,
            "frames": frames, "fused": b.fuses_superres}
