"""`vp-export`: a preset (+ weights) -> a bundle folder. A thin layer over export_bundle."""

from __future__ import annotations

from pathlib import Path

import click

from vp.calibration.data import CalibrationConfig
from vp.calibration.llm import TRAINED_EVAL_CASES
from vp.calibration.statistics import STATISTICS
from vp.engines.builder import DEFAULT_RTX_SM
from vp.engines.precision import PRECISIONS, QUANTIZED
from vp.export.bundle import ENGINE_CHOICES, ExportConfig, export_bundle
from vp.models.presets import PRESETS

_D = ExportConfig(preset="", out=Path())
_C = CalibrationConfig()


def _parse_sm(ctx, param, value: str) -> tuple[int, ...]:
    try:
        return tuple(int(v) for v in value.replace(" ", "").split(",") if v)
    except ValueError:
        raise click.BadParameter(f"expected compute capabilities like 86,89, got {value!r}") from None


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--preset", required=True,
              help=f"Preset name: {', '.join(PRESETS)} (demo is trained and its weights ship with vp; the others "
                   "are seeded random inits at real sizes).")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path),
              help="Bundle folder to write (must be empty or absent unless --force).")
@click.option("--weights", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Folder of safetensors weights (vp.models.save); default: the preset's shipped weights (demo), "
                   "else a seeded random init.")
@click.option("--precision", type=click.Choice(PRECISIONS), default=_D.precision, show_default=True,
              help="Precision of the graphs (and so of the engines: TensorRT is strongly typed). int8: the LLM in "
                   "W8A8 with SmoothQuant, for full TensorRT; int8-wo: int8 weights only, for TensorRT for RTX and "
                   "ONNX Runtime on a CPU. Both calibrate on the procedural world and run an accuracy gate.")
@click.option("--calibration-statistic", type=click.Choice(STATISTICS), default="max", show_default=True,
              help="int8: how each activation's clip is chosen (max, 99.99th percentile, least squared error).")
@click.option("--smoothquant-alpha", type=click.FloatRange(min=0, max=1, max_open=True), default=None,
              help="INT8: SmoothQuant's migration strength, 0 for none (both flavours smooth by default: ONNX "
                   "Runtime's CPU kernel quantizes int8-wo's activations per row) [default: 0.5].")
@click.option("--calibration-sequences", type=int, default=_C.sequences, show_default=True,
              help="INT8: calibration sequences (task layouts of the procedural world).")
@click.option("--held-out-sequences", type=int, default=_C.held_out, show_default=True,
              help="INT8: held-out sequences the accuracy gate teacher-forces.")
@click.option("--gate-eval-cases", type=int, default=None,
              help="INT8: held-out t2v cases the demo evaluator scores on both fp32 and INT8 "
                   f"(default: {TRAINED_EVAL_CASES} for a preset with trained weights, 0 for a random init).")
@click.option("--no-accuracy-gate", is_flag=True,
              help="INT8: keep the bundle without running the accuracy gate (the manifest says so).")
@click.option("--engines", type=click.Choice(ENGINE_CHOICES), default=_D.engines, show_default=True,
              help="auto: full TensorRT if it can start, else TensorRT-RTX (no GPU needed), else ONNX only.")
@click.option("--sm", default=",".join(map(str, DEFAULT_RTX_SM)), show_default=True, callback=_parse_sm,
              help="TensorRT-RTX target compute capabilities (75, 80, 86, 89, 120, 121).")
@click.option("--components", default="", help="Comma-separated subset (default: all), e.g. llm,text_encoder.")
@click.option("--force", is_flag=True, help="Replace a non-empty output folder.")
def main(preset, out, weights, precision, calibration_statistic, smoothquant_alpha, calibration_sequences,
         held_out_sequences, gate_eval_cases, no_accuracy_gate, engines, sm, components, force):
    """Export the PyTorch reference models of a preset to ONNX, build TensorRT
    engines, and write the bundle folder that the runtime loads."""
    from tqdm import tqdm

    quantization = None
    if precision in QUANTIZED:
        from vp.calibration.llm import QuantizationConfig

        quantization = QuantizationConfig(
            precision=precision, statistic=calibration_statistic, smoothquant_alpha=smoothquant_alpha,
            data=CalibrationConfig(sequences=calibration_sequences, held_out=held_out_sequences),
            eval_cases=gate_eval_cases, enforce=not no_accuracy_gate)
    config = ExportConfig(preset=preset, out=out, weights=weights, precision=precision, engines=engines, sm=sm,
                          components=tuple(c for c in components.split(",") if c) or None, force=force,
                          quantization=quantization)
    bars = []  # made at the first step, so that early errors print no bar

    def on_step(stage: str, component: str, total: int) -> None:
        # called before each step: the bar counts finished steps
        if bars:
            bars[0].update(1)
        else:
            bars.append(tqdm(desc="export", unit="step", total=total))
        bars[0].total = total
        bars[0].set_postfix_str(f"{stage} {component}")

    try:
        summary = export_bundle(config, on_step=on_step)
        for bar in bars:
            bar.update(1)  # the last step
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    except KeyboardInterrupt:
        for bar in bars:
            bar.close()
        click.echo(f"interrupted: nothing was written at {out}", err=True)
        raise SystemExit(130) from None
    finally:
        for bar in bars:
            bar.close()
    click.echo(summary.table())
    engines_line = f"engines: {summary.flavour}" if summary.flavour else "engines: none"
    click.echo(f"{engines_line} ({summary.engines_note})")
    if summary.calibration:
        click.echo("\n".join(summary.calibration))
    click.echo(f"bundle: {summary.bundle}")
