"""Preset (+ weights) -> bundle folder: ONNX graphs, TensorRT engines, manifest.

A quantized precision (int8, int8-wo; vp.engines.precision) calibrates the LLM
first (vp.calibration: before any graph is written, so bad input fails early),
writes every component twice (fp16 for TensorRT, fp32 for ONNX Runtime's CPU
provider), rewrites both LLM graphs to int8, and runs the accuracy gate on the
finished bundle before it is moved into place: a missed gate leaves nothing.

The bundle is assembled in a hidden temporary folder beside the target and
renamed into place at the end, so an interrupted export never leaves a folder
that looks complete.
"""

from __future__ import annotations

import dataclasses
import os
import shutil
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from vp.engines.builder import DEFAULT_RTX_SM, FLAVOURS, EngineFromOnnx, import_tensorrt, sha256_of, usable_flavour
from vp.engines.manifest import TOKENIZER, ComponentRecord, Manifest
from vp.engines.precision import QUANTIZED, check_precision, graph_float
from vp.export.contracts import contracts
from vp.export.onnx_export import export_component
from vp.export.output_lock import OutputLock
from vp.models.checkpoint import load
from vp.models.presets import get_preset

ENGINE_CHOICES = ("auto", "none", "rtx", "trt")
TIMING_CACHE = "timing.cache"


@dataclass(frozen=True, kw_only=True)
class ExportConfig:
    """What `vp-export` does; its CLI defaults come from here.

    engines: "auto" = full TensorRT if it can start a builder, else TensorRT-RTX,
    else ONNX only (the manifest says why); "none" = ONNX only.
    sm: TensorRT-RTX compute capability targets (ignored by full TensorRT).
    components: a subset of the preset's components (None = all).
    quantization: the INT8 settings (vp.calibration.llm.QuantizationConfig) when precision is
    int8 or int8-wo; None = their defaults.
    """

    preset: str
    out: Path
    weights: Path | None = None
    precision: str = "fp32"
    engines: str = "auto"
    sm: tuple[int, ...] = DEFAULT_RTX_SM
    components: tuple[str, ...] | None = None
    force: bool = False
    quantization: object | None = None


@dataclass
class SummaryRow:
    component: str
    onnx_mb: float
    engine_mb: float | None
    seconds: float


@dataclass
class ExportSummary:
    bundle: Path
    flavour: str | None
    engines_note: str
    rows: list[SummaryRow] = field(default_factory=list)
    calibration: list[str] = field(default_factory=list)  # the calibration record, described

    def table(self) -> str:
        lines = [f"{'component':<20}{'ONNX MB':>10}{'engine MB':>11}{'seconds':>9}"]
        for r in self.rows:
            engine = f"{r.engine_mb:.1f}" if r.engine_mb is not None else "-"
            lines.append(f"{r.component:<20}{r.onnx_mb:>10.1f}{engine:>11}{r.seconds:>9.1f}")
        return "\n".join(lines)


def clip_record(preset, text_vocab: int) -> dict:
    """What the runtime needs of the clip geometry, so it never recomputes tokenizer strides, and
    the text encoder's vocabulary size (its tokenizer's ids are checked against it)."""
    c, g = preset.clip, preset.geometry
    return {
        "frames": c.frames, "height": c.height, "width": c.width, "fps": c.fps, "portrait": c.portrait,
        "video_grid": g.video_grid, "portrait_grid": g.portrait_grid, "audio_frames": g.audio_frames,
        "sample_rate": preset.audio_tokenizer.sample_rate, "audio_samples": preset.audio_samples,
        "text_tokens": preset.text_encoder.max_tokens, "text_vocab": text_vocab,
    }


def _check_config(config: ExportConfig) -> tuple[str | None, str]:
    """Validate everything that can fail before any work; returns (flavour, why)."""
    preset = get_preset(config.preset)
    check_precision(config.precision)
    if config.precision in QUANTIZED:
        _quantization(config).check()
        if preset.calibration is None:
            raise ValueError(f"preset {preset.name} has no calibration data source for {config.precision} (INT8 is "
                             f"calibrated on the procedural world through the preset's own tokenizers); export it "
                             f"at --precision fp16 or fp32")
        if config.components and "llm" not in config.components:
            raise ValueError(f"--precision {config.precision} quantizes the LLM: include llm in --components")
    known = contracts(preset)
    unknown = set(config.components or ()) - set(known)
    if unknown:
        raise ValueError(f"unknown component(s) {', '.join(sorted(unknown))}; {preset.name} has {', '.join(known)}")
    out = Path(config.out)
    if out.exists() and not out.is_dir():
        raise ValueError(f"output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()) and not config.force:
        raise ValueError(f"output folder {out} is not empty; pass --force to replace it")
    parent = out.resolve().parent
    if not parent.is_dir() or not os.access(parent, os.W_OK):
        raise ValueError(f"cannot write into {parent}")
    if config.engines not in ENGINE_CHOICES:
        raise ValueError(f"--engines must be one of {', '.join(ENGINE_CHOICES)}, got {config.engines!r}")
    if config.engines == "none":
        return None, "engines not asked for (--engines none)"
    if config.engines in ("rtx", "trt"):
        trt = import_tensorrt(config.engines)
        flavour, why = config.engines, f"{FLAVOURS[config.engines]} {trt.__version__} (--engines {config.engines})"
    else:
        flavour, why = usable_flavour()
        if not flavour:
            return None, f"no TensorRT builder could start ({why}); wrote ONNX only"
    if config.precision == "int8" and flavour == "rtx":
        why += ("; W8A8 is meant for full TensorRT: TensorRT for RTX builds it, but documents weight-only INT8 "
                "(--precision int8-wo) as what it accelerates")
    return flavour, why


def _quantization(config: ExportConfig):
    from vp.calibration.llm import QuantizationConfig

    return config.quantization or QuantizationConfig(precision=config.precision)


def _weights_record(preset, weights: Path | None) -> str | None:
    """What the manifest says the weights are: the folder given, the preset's shipped ones, or None (random init)."""
    if weights:
        return str(Path(weights).resolve())
    return f"shipped with vp {preset.name} ({preset.weights})" if preset.weights else None


def export_bundle(config: ExportConfig, on_step: Callable[[str, str, int], None] | None = None) -> ExportSummary:
    """Export `config.preset` into the bundle folder `config.out`.

    on_step(stage, component, total_steps) is called before each ONNX export and
    each engine build (progress display). An existing bundle's timing.cache is
    reused (--force), which speeds up rebuilding engines on a GPU. Raises ValueError on bad input, before any work where
    it can be known in advance.
    """
    flavour, why = _check_config(config)
    with OutputLock(Path(config.out)):
        return _export(config, flavour, why, on_step)


def _export(config: ExportConfig, flavour: str | None, why: str,
            on_step: Callable[[str, str, int], None] | None) -> ExportSummary:
    preset = get_preset(config.preset)
    models = load(config.preset, config.weights)
    calibrated = None
    if config.precision in QUANTIZED:
        from vp.calibration.llm import calibrate

        if on_step:
            on_step("calibrate", "llm", 0)
        calibrated = calibrate(models, dataclasses.replace(_quantization(config), precision=config.precision))
    out = Path(config.out).resolve()
    tmp = out.parent / f".{out.name}.partial-{os.getpid()}"
    shutil.rmtree(tmp, ignore_errors=True)
    try:
        (tmp / "onnx").mkdir(parents=True)
    except OSError as error:
        raise ValueError(f"cannot write the bundle in {out.parent}: {error.strerror}") from None
    summary = ExportSummary(bundle=out, flavour=flavour, engines_note=why)
    try:
        clip = clip_record(preset, models.text_encoder.encoder.vocab_size)
        manifest = Manifest(preset=preset.to_dict(), vocabulary=preset.vocab.to_dict(),
                            sampling=preset.sampling.to_dict(), clip=clip, engines_note=why,
                            weights=_weights_record(preset, config.weights))
        selected = {k: v for k, v in contracts(preset).items() if not config.components or k in config.components}
        total = len(selected) * (2 if flavour else 1) + (2 if calibrated else 0)
        exported = dataclasses.replace(models, llm=calibrated.model) if calibrated else models
        for name, contract in selected.items():
            if on_step:
                on_step("onnx", name, total)
            start = time.perf_counter()
            path = tmp / "onnx" / f"{name}.onnx"
            # a quantized LLM is exported whole and split into its heads after quantization
            whole = bool(calibrated) and name == "llm"
            external = export_component(exported, contract, path, graph_float(config.precision), heads=not whole)
            cpu = None
            if calibrated:  # and the fp32 graph ONNX Runtime's CPU provider loads
                cpu = tmp / "onnx" / f"{name}.cpu.onnx"
                if export_component(exported, contract, cpu, "fp32", heads=not whole):
                    raise ValueError(f"{name}: quantized bundles of graphs over 2 GB are not supported")
                if whole:
                    from vp.calibration.llm import quantize

                    heads = preset.vocab.heads()
                    quantize(path, calibrated, tensorrt=True, heads=heads)
                    quantize(cpu, calibrated, tensorrt=False, heads=heads)
            size = sum(p.stat().st_size for p in (path, cpu) if p) + sum((path.parent / e).stat().st_size
                                                                          for e in external)
            manifest.components[name] = ComponentRecord(onnx=path.name, sha256=sha256_of(path), bytes=size,
                                                        precision=config.precision, contract=contract,
                                                        external_data=tuple(external),
                                                        cpu_onnx=cpu.name if cpu else None,
                                                        cpu_sha256=sha256_of(cpu) if cpu else "",
                                                        cpu_kernel_block=_kernel_blocks(config.precision)[0]
                                                        if whole else None)
            summary.rows.append(SummaryRow(name, size / 1e6, None, time.perf_counter() - start))
        if flavour:
            (tmp / "engines").mkdir()
            if (out / TIMING_CACHE).is_file():
                shutil.copyfile(out / TIMING_CACHE, tmp / TIMING_CACHE)
            for row in summary.rows:
                if on_step:
                    on_step("engine", row.component, total)
                builder = EngineFromOnnx(tmp / "onnx" / f"{row.component}.onnx", selected[row.component],
                                         flavour=flavour, compute_capabilities=config.sm,
                                         timing_cache=tmp / TIMING_CACHE)
                record = builder.build(tmp / "engines" / f"{row.component}.engine")
                manifest.engines[row.component] = record
                row.engine_mb, row.seconds = record.bytes / 1e6, row.seconds + record.build_seconds
        shutil.copyfile(models.text_encoder.tokenizer_path, tmp / TOKENIZER)
        manifest.tokenizer_sha256 = sha256_of(tmp / TOKENIZER)
        manifest.write(tmp)
        if calibrated:
            from vp.calibration.record import CalibrationRecord

            manifest.calibration = _gate(calibrated, models, tmp, manifest, on_step, total)
            manifest.write(tmp)
            summary.calibration = CalibrationRecord.from_dict(manifest.calibration).lines()
        _replace(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return summary


def _kernel_blocks(precision: str) -> tuple[int | None, ...]:
    """The K blocks of the CPU graph's int8 kernels the gate may try, in order (None: the graph has
    none, W8A8's MatMulIntegerToFloat takes no block)."""
    from vp.calibration.llm import KERNEL_BLOCKS

    return KERNEL_BLOCKS if precision == "int8-wo" else (None,)


def _gate(calibrated, models, tmp: Path, manifest: Manifest, on_step, total: int) -> dict:
    """The calibration record with the accuracy gate's verdict; ValueError (nothing written)
    when the gate is enforced and missed. int8-wo: the gate runs with each K block of the CPU
    kernels in turn (_kernel_blocks) until one passes; the manifest at `tmp` names that block and
    the record lists the blocks that failed and why."""
    from vp.calibration.llm import gate, record

    if not calibrated.config.enforce:
        return record(calibrated, {"skipped": "--no-accuracy-gate"}).to_dict()
    if on_step:
        on_step("gate", "llm", total)
    rejected, fp32_rows = [], None
    for block in _kernel_blocks(calibrated.config.precision):
        manifest.components["llm"] = dataclasses.replace(manifest.components["llm"], cpu_kernel_block=block)
        manifest.write(tmp)
        verdict = gate(calibrated, models, tmp, fp32_rows=fp32_rows)
        if verdict["passed"]:
            break
        rejected.append({"cpu_kernel_block": block, "failures": verdict["failures"]})
        fp32_rows = (verdict["evaluation"] or {}).get("fp32")
    result = record(calibrated, verdict | {"rejected": rejected[:-1] if not verdict["passed"] else rejected})
    if not result.gate["passed"]:
        figures = "\n".join(line for line in result.lines()[3:] if not line.lstrip().startswith("failed:"))
        earlier = "".join(f"; with the CPU kernels' K block {r['cpu_kernel_block']}: {'; '.join(r['failures'])}"
                          for r in rejected[:-1])
        raise ValueError(f"the {calibrated.config.precision} LLM misses the accuracy gate: "
                         f"{'; '.join(result.gate['failures'])}{earlier}. Nothing was written; try another "
                         f"--calibration-statistic or more --calibration-sequences, or pass --no-accuracy-gate "
                         f"to keep it anyway.\n{figures}")
    return result.to_dict()


def _replace(tmp: Path, out: Path) -> None:
    """Move the finished bundle into place, replacing an old one only at the end."""
    old = None
    if out.exists():
        old = out.parent / f".{out.name}.old-{os.getpid()}"
        out.rename(old)
    try:
        tmp.rename(out)
    except OSError:
        if old is not None:
            old.rename(out)  # put the previous bundle back
        raise
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
