"""`vp bench`: per-stage and end-to-end latency of a bundle, against the physical floor.

Every figure is a median (with p90/p99 where a distribution makes sense) over
`iters` measured runs after `warmup` runs that are thrown away. The report is a
dict that `--json` writes as is; its schema is SCHEMA (docs/benchmarks.md).

The floor: a decode step must read the LLM weights once and the K/V of every
sequence's context; at this machine's measured memory bandwidth (a large
numpy copy) that takes bytes / bandwidth, whatever the code does.
"""

from __future__ import annotations

import os
import platform
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass

import numpy as np

from vp.runtime.pipeline import Pipeline
from vp.runtime.process_memory import peak_rss_mb
from vp.runtime.vocab import Task

SCHEMA_VERSION = 1
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


def _stat(values) -> dict:
    v = np.asarray(values, np.float64)
    return {"median_ms": float(np.median(v)), "p90_ms": float(np.percentile(v, 90)),
            "p99_ms": float(np.percentile(v, 99)), "mean_ms": float(v.mean()), "n": int(v.size)}


def memory_bandwidth_gbs(megabytes: int = 256, repeats: int = 5) -> float:
    """Host memory bandwidth (read + write) of a large copy, best of `repeats`, GB/s.

    Measured in a child process: its two buffers of `megabytes` never count in
    this process's peak memory (which vp bench reports)."""
    code = (
        "import time, numpy as np\n"
        f"src = np.ones({megabytes} * 2**20 // 8); dst = np.empty_like(src); best = float('inf')\n"
        f"for _ in range({repeats}):\n"
        "    start = time.perf_counter(); np.copyto(dst, src); best = min(best, time.perf_counter() - start)\n"
        "print(2 * src.nbytes / best / 1e9)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        raise ValueError(f"the memory bandwidth probe failed: {error}") from None
    return float(done.stdout)


def llm_weight_bytes(llm: dict, itemsize: int) -> int:
    """Bytes of the LLM weights one decode step reads (tied embedding read once, by the logits)."""
    d, kv = llm["d_model"], llm["n_kv_heads"] * (llm["d_model"] // llm["n_heads"])
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * llm["mlp_hidden"] + 2 * d
    return (llm["vocab_size"] * d + llm["n_layers"] * per_layer + d) * itemsize


def kv_bytes(llm: dict, context: float, sequences: int, itemsize: int) -> float:
    """Bytes of K and V a decode step reads for `sequences` sequences of `context` tokens."""
    head_dim = llm["d_model"] // llm["n_heads"]
    return sequences * context * llm["n_layers"] * 2 * llm["n_kv_heads"] * head_dim * itemsize


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
    progress("memory bandwidth")
    bandwidth = memory_bandwidth_gbs()
    start = time.perf_counter()
    with Pipeline.load(config.bundle, backend=config.backend) as pipeline:
        return _measure(pipeline, config, task, bandwidth, start, progress)


def _measure(pipeline: Pipeline, config: BenchConfig, task: Task, bandwidth: float, start: float,
             progress: Callable[[str], None]) -> dict:
    for component in pipeline.bundle.manifest.components:
        if component != "llm":
            pipeline.session(component)
    load_ms = (time.perf_counter() - start) * 1e3
    b = pipeline.bundle
    manifest = b.manifest
    precision = manifest.components["llm"].precision
    itemsize = 2 if precision == "fp16" else 4
    prompt = _prompt(pipeline, config.prompt_len) if task is not Task.UNCONDITIONAL else ""
    runs = [_bench_batch(pipeline, task, prompt, batch, config, bandwidth, itemsize, progress)
            for batch in config.batch]
    progress(f"prefix sharing ({config.share_samples} samples)")
    shared = pipeline.generate(task=task, prompt=prompt, seed=config.seed, num_samples=config.share_samples)
    st = shared.kv_stats
    block_bytes = pipeline._llm.pool_bytes // pipeline._llm.num_blocks
    report = {
        "schema_version": SCHEMA_VERSION,
        "machine": _machine(bandwidth),
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
        "sharing": {"samples": config.share_samples, "cfg": b.sampling.guided and bool(prompt),
                    "saved_blocks": st.saved_blocks,
                    "saved_bytes": st.saved_blocks * block_bytes,
                    "saving_share": st.saved_blocks / (st.saved_blocks + st.allocated_blocks)},
        "memory": {"peak_rss_mb": peak_rss_mb(),
                   "kv_pool_mb": pipeline._llm.pool_bytes / 1e6, "gpu": None},
        "compare_torch": None,
    }
    if config.compare_torch:
        progress("torch reference")
        from vp.models.timing import torch_timings

        report["compare_torch"] = torch_timings(manifest, task, prompt, config, runs[0])
    return report


def _bench_batch(pipeline, task, prompt, batch, config, bandwidth, itemsize, progress) -> dict:
    b = pipeline.bundle
    results, first_frame = [], []
    for i in range(config.warmup + config.iters):
        progress(f"batch {batch}: run {i + 1}/{config.warmup + config.iters}" + (" (warm-up)" if i < config.warmup else ""))
        marks = {}
        start = time.perf_counter()

        def on_token(done, total, marks=marks):
            marks[done] = time.perf_counter()

        result = pipeline.generate(task=task, prompt=prompt, seed=config.seed + i, num_samples=batch,
                                   on_token=on_token)
        if i >= config.warmup:
            results.append(result)
            layout = result.layout
            if layout.video_grid is not None:
                per_frame = layout.video_grid[1] * layout.video_grid[2]
                first_frame.append((marks[1 + per_frame] - start) * 1e3)  # <bov_o> + one latent frame
    layout = results[0].layout
    sequences = batch * (2 if len(layout.prefix) and b.sampling.guided and prompt else 1)
    steps, backend = decode_steps(results)
    tpot = _stat(steps)
    llm = b.manifest.preset["llm"]
    mean_context = (layout.prefix_len + layout.total_len) / 2
    step_bytes = llm_weight_bytes(llm, itemsize) + kv_bytes(llm, mean_context, sequences, itemsize)
    floor_ms = step_bytes / (bandwidth * 1e9) * 1e3
    t = lambda stage: [r.timings.get(stage, 0.0) for r in results]  # noqa: E731
    latent_frames = layout.video_grid[0] if layout.video_grid else 0
    decode_1 = _time(lambda: pipeline._decode_video(np.zeros((1, *layout.video_grid[1:]), np.int64)),
                     config) if latent_frames else None
    media_seconds = batch * (b.manifest.clip["frames"] / b.media.fps if latent_frames > 1 else 0)
    total = np.asarray(t("total"))
    run = {
        "batch": batch,
        "sequences": sequences,
        "prefix_len": layout.prefix_len,
        "output_len": layout.output_len,
        "text_encoder": _stat(t("text_encoder")) if prompt else None,
        "prefill": _stat(t("llm_prefill")),
        "decode": {**tpot, "p50_ms": tpot["median_ms"], "tokens_per_s": 1e3 * batch / tpot["median_ms"],
                   "context_from": layout.prefix_len, "context_to": layout.total_len},
        "overhead_share": float(np.median((steps - backend) / steps)),
        "floor": {"weight_bytes": llm_weight_bytes(llm, itemsize), "step_bytes": step_bytes,
                  "floor_ms": floor_ms, "ratio": tpot["median_ms"] / floor_ms},
        "video_decoder_ms_per_latent_frame": (float(np.median(t("video_decoder"))) / latent_frames / batch
                                              if latent_frames else None),
        "video_decoder_one_latent_frame": decode_1,
        "audio_decoder": _stat(t("audio_decoder")) if layout.audio_frames else None,
        "end_to_end": _stat(total),
        "time_to_first_frame_ms": (float(np.median(first_frame)) + decode_1["median_ms"]) if first_frame else None,
        "real_time_factor": float(media_seconds / (np.median(total) / 1e3)) if media_seconds else None,
        "kv": asdict(results[-1].kv_stats),
        "superres": _bench_superres(pipeline, layout, prompt, config) if b.superres_stages and task is
        Task.TEXT_TO_VIDEO and batch == config.batch[0] else None,
    }
    return run


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


def _time(fn, config) -> dict:
    for _ in range(config.warmup):
        fn()
    times = []
    for _ in range(config.iters):
        start = time.perf_counter()
        fn()
        times.append((time.perf_counter() - start) * 1e3)
    return _stat(times)


def _bench_superres(pipeline, layout, prompt, config) -> dict | None:
    """Each SR stage on random low-res codes of the clip's grid: ms per stage and per step."""
    b = pipeline.bundle
    low = tuple(b.manifest.preset["superres"][0]["low_res_grid"])
    if tuple(layout.video_grid) != low:
        return None
    text = None
    if prompt:
        tokens = b.tokenizer.tokenize([prompt])
        (embeddings,) = pipeline.session("text_encoder").run(text_ids=tokens.ids, text_mask=tokens.mask)
        text = (embeddings, tokens.mask)
    rng = np.random.default_rng(config.seed)
    codes = rng.integers(0, b.vocab.visual_codes, low)
    stat = _time(lambda: pipeline._super_resolve(codes, text, np.random.default_rng(0)), config)
    steps = sum(s["steps"] for s in b.manifest.preset["superres"])
    return {"all_stages": stat, "stages": len(b.superres_stages), "ms_per_step": stat["median_ms"] / steps}


_STAT = {"type": "object", "required": ["median_ms", "p90_ms", "p99_ms", "mean_ms", "n"],
         "properties": {k: {"type": "number"} for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms")}}
_NULLABLE_STAT = {"anyOf": [_STAT, {"type": "null"}]}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vp bench report",
    "type": "object",
    "required": ["schema_version", "machine", "versions", "bundle", "backend", "task", "prompt_tokens", "warmup",
                 "iters", "seed", "threads", "load_ms", "runs", "sharing", "memory", "compare_torch"],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "machine": {"type": "object", "required": ["cpu", "cores", "memory_bandwidth_gbs"]},
        "versions": {"type": "object", "required": ["vp", "onnxruntime", "numpy"]},
        "bundle": {"type": "object", "required": ["path", "preset", "precision", "engines", "build_seconds"]},
        "backend": {"enum": ["ort", "trt"]},
        "task": {"type": "string"},
        "warmup": {"type": "integer", "minimum": 0},
        "iters": {"type": "integer", "minimum": 1},
        "load_ms": {"type": "number"},
        "runs": {"type": "array", "minItems": 1, "items": {
            "type": "object",
            "required": ["batch", "sequences", "prefix_len", "output_len", "text_encoder", "prefill", "decode",
                         "overhead_share", "floor", "video_decoder_ms_per_latent_frame", "audio_decoder",
                         "end_to_end", "time_to_first_frame_ms", "real_time_factor", "kv", "superres"],
            "properties": {
                "prefill": _STAT, "end_to_end": _STAT, "text_encoder": _NULLABLE_STAT,
                "audio_decoder": _NULLABLE_STAT,
                "decode": {"allOf": [_STAT, {"type": "object", "required": ["p50_ms", "tokens_per_s", "context_from",
                                                                             "context_to"]}]},
                "overhead_share": {"type": "number", "minimum": 0, "maximum": 1},
                "floor": {"type": "object", "required": ["weight_bytes", "step_bytes", "floor_ms", "ratio"]},
                "kv": {"type": "object", "required": ["allocated_slots", "used_slots", "waste", "shared_blocks",
                                                      "saved_blocks"]},
            }}},
        "sharing": {"type": "object", "required": ["samples", "saved_blocks", "saved_bytes", "saving_share"]},
        "memory": {"type": "object", "required": ["peak_rss_mb", "kv_pool_mb"]},
        "compare_torch": {"anyOf": [{"type": "null"}, {"type": "object", "required": ["stages", "ratio"]}]},
    },
}


def format_table(report: dict) -> str:
    """The report as a readable table (ms unless stated)."""
    lines = [f"vp bench: {report['bundle']['preset']} ({report['bundle']['precision']}), backend {report['backend']}, "
             f"task {report['task']}, {report['prompt_tokens']} prompt tokens, {report['warmup']} warm-up + "
             f"{report['iters']} runs; {report['machine']['cpu']} ({report['machine']['cores']} cores, "
             f"{report['machine']['memory_bandwidth_gbs']:.1f} GB/s)",
             f"  load (cold): {report['load_ms']:.0f} ms"]
    torch = report.get("compare_torch") or {}
    for run in report["runs"]:
        lines.append(f"  batch {run['batch']} ({run['sequences']} sequences), prefix {run['prefix_len']}, "
                     f"output {run['output_len']}:")
        rows = [("text encoder", run["text_encoder"]), ("prefill (TTFT)", run["prefill"]),
                ("decode step (TPOT)", run["decode"]), ("audio decoder", run["audio_decoder"]),
                ("end to end", run["end_to_end"])]
        for name, s in rows:
            if s is None:
                continue
            ratio = torch.get("ratio", {}).get(name) if run["batch"] == 1 else None
            extra = f"   torch/vp {ratio:.2f}x" if ratio else ""
            lines.append(f"    {name:<22}{s['median_ms']:>10.2f}  p90 {s['p90_ms']:>9.2f}  p99 {s['p99_ms']:>9.2f}{extra}")
        d, f = run["decode"], run["floor"]
        lines.append(f"    tokens/s {d['tokens_per_s']:.1f}; floor {f['floor_ms']:.2f} ms/step "
                     f"({f['step_bytes'] / 1e6:.0f} MB at the measured bandwidth): measured/floor {f['ratio']:.2f}x")
        lines.append(f"    runtime overhead {100 * run['overhead_share']:.1f}% of a decode step; "
                     f"KV waste {100 * run['kv']['waste']:.1f}%")
        if run["video_decoder_ms_per_latent_frame"] is not None:
            lines.append(f"    video decoder {run['video_decoder_ms_per_latent_frame']:.1f} ms per latent frame; "
                         f"first frame after {run['time_to_first_frame_ms']:.0f} ms; real-time factor "
                         f"{run['real_time_factor'] or 0:.3f}")
        if run["superres"]:
            sr = run["superres"]
            lines.append(f"    super-resolution {sr['all_stages']['median_ms']:.0f} ms ({sr['stages']} stage(s)), "
                         f"{sr['ms_per_step']:.1f} ms per step")
    s = report["sharing"]
    lines.append(f"  prefix sharing, {s['samples']} samples: {s['saved_blocks']} blocks saved "
                 f"({s['saved_bytes'] / 1e6:.1f} MB, {100 * s['saving_share']:.0f}% of the KV blocks)")
    lines.append(f"  peak RSS {report['memory']['peak_rss_mb']:.0f} MB, KV pool {report['memory']['kv_pool_mb']:.1f} MB")
    return "\n".join(lines)
