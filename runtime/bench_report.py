"""The `vp bench` report: its JSON schema (docs/benchmarks.md) and its table."""

from __future__ import annotations

SCHEMA_VERSION = 4

_STAT = {"type": "object", "required": ["median_ms", "p90_ms", "p99_ms", "mean_ms", "n"],
         "properties": {k: {"type": "number"} for k in ("median_ms", "p90_ms", "p99_ms", "mean_ms")}}
_NULLABLE_STAT = {"anyOf": [_STAT, {"type": "null"}]}

SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "vp bench report",
    "type": "object",
    "required": ["schema_version", "machine", "versions", "bundle", "backend", "task", "prompt_tokens", "warmup",
                 "iters", "seed", "threads", "load_ms", "runs", "stream", "sharing", "memory", "compare_torch"],
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
                         "end_to_end", "real_time_factor", "kv", "superres"],
            "properties": {
                "prefill": _STAT, "end_to_end": _STAT, "text_encoder": _NULLABLE_STAT,
                "audio_decoder": _NULLABLE_STAT,
                "decode": {"allOf": [_STAT, {"type": "object", "required": ["p50_ms", "tokens_per_s", "context_from",
                                                                             "context_to"]}]},
                "overhead_share": {"type": "number", "minimum": 0, "maximum": 1},
                "floor": {"type": "object", "required": ["weight_bytes", "step_bytes", "floor_ms", "ratio",
                                                          "bandwidth_gbs", "device"],
                          "properties": {"device": {"enum": ["host", "gpu"]}}},
                "kv": {"type": "object", "required": ["allocated_slots", "used_slots", "waste", "shared_blocks",
                                                      "saved_blocks"]},
                "superres": {"anyOf": [{"type": "null"}, {
                    "type": "object", "required": ["all_stages", "stages", "ms_per_step", "frames", "fused"],
                    "properties": {"all_stages": _STAT, "frames": _STAT, "fused": {"type": "boolean"}}}]},
            }}},
        "stream": {"anyOf": [{"type": "null"}, {
            "type": "object", "required": ["time_to_first_frame", "decode_whole_clip", "decode_streamed", "decode_ratio"],
            "properties": {"time_to_first_frame": _STAT, "decode_whole_clip": _STAT, "decode_streamed": _STAT,
                           "decode_ratio": {"type": "number", "minimum": 0}}}]},
        "sharing": {"type": "object", "required": ["samples", "saved_blocks", "saved_bytes", "saving_share"]},
        "memory": {"type": "object", "required": ["peak_rss_mb", "kv_pool_mb", "gpu"]},
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
                     f"({f['step_bytes'] / 1e6:.0f} MB at {f['bandwidth_gbs']:.0f} GB/s of {f['device']} memory): "
                     f"measured/floor {f['ratio']:.2f}x")
        lines.append(f"    runtime overhead {100 * run['overhead_share']:.1f}% of a decode step; "
                     f"KV waste {100 * run['kv']['waste']:.1f}%")
        if run["video_decoder_ms_per_latent_frame"] is not None:
            lines.append(f"    video decoder {run['video_decoder_ms_per_latent_frame']:.1f} ms per latent frame; "
                         f"real-time factor {run['real_time_factor'] or 0:.3f}")
        if run["superres"]:
            sr = run["superres"]
            lines.append(f"    super-resolution {sr['all_stages']['median_ms']:.0f} ms ({sr['stages']} stage(s)), "
                         f"{sr['ms_per_step']:.1f} ms per step; its frames {sr['frames']['median_ms']:.0f} ms "
                         f"({'both decodes and the fusion' if sr['fused'] else 'decoded'})")
    stream = report["stream"]
    if stream:
        lines.append(f"  stream (1 sample): first frames after {stream['time_to_first_frame']['median_ms']:.0f} ms; "
                     f"decoding each latent frame once {stream['decode_streamed']['median_ms']:.1f} ms, "
                     f"{stream['decode_ratio']:.2f}x one whole-clip decode "
                     f"({stream['decode_whole_clip']['median_ms']:.1f} ms)")
    s = report["sharing"]
    lines.append(f"  prefix sharing, {s['samples']} samples: {s['saved_blocks']} blocks saved "
                 f"({s['saved_bytes'] / 1e6:.1f} MB, {100 * s['saving_share']:.0f}% of the KV blocks)")
    memory = report["memory"]
    gpu = f", GPU memory {memory['gpu']['used_mb']:.0f} MB" if memory["gpu"] else ""
    lines.append(f"  peak RSS {memory['peak_rss_mb']:.0f} MB, KV pool {memory['kv_pool_mb']:.1f} MB{gpu}")
    return "\n".join(lines)
