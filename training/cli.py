"""`vp-train`: train the demo preset's components on the procedural world, one stage at a time.

Thin click layer over vp.training.recipe. Each stage resumes from its last
checkpoint in --work and, when done, writes its component's final weights
(fp16 safetensors) into --out, the demo preset's shipped weights folder by
default. Order: video-tokenizer, audio-tokenizer, then the stages that read
their codes.
"""

from __future__ import annotations

from pathlib import Path

import click

from vp.training.evaluator import TASKS
from vp.training.recipe import STAGES, run_stage


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("stage", type=click.Choice(list(STAGES)))
@click.option("--work", type=click.Path(file_okay=False, path_type=Path), default=Path("train-work"),
              show_default=True, help="Checkpoints, loss logs and token datasets; a stage resumes from here.")
@click.option("--out", type=click.Path(file_okay=False, path_type=Path), default=None,
              help="Where the final weights go [default: the demo preset's shipped weights folder].")
@click.option("--steps", type=click.IntRange(min=1), default=None,
              help="Override the recipe's step count (e.g. a quick trial).")
@click.option("--threads", type=click.IntRange(min=1), default=None, help="torch threads [default: all cores].")
@click.option("--round", "round_", type=click.IntRange(min=1), default=1, show_default=True,
              help="llm only: round N > 1 trains two more cycles from the LLM already in --out, on "
                   "batches of its own seed (checkpoints in --work/llm_roundN), the text projection "
                   "kept as it is.")
@click.option("--peak-lr", type=click.FloatRange(min=0, min_open=True), default=None,
              help="Override the recipe's peak learning rate (e.g. a late llm round at a lower peak).")
def main(stage, work, out, steps, threads, round_, peak_lr):
    """Train STAGE of the demo model (docs/training.md: the recipe, the wall time of each stage).

    \b
    Stages, in order (each reads what the ones before it wrote):
      video-tokenizer   the MAGVIT-v2 style video tokenizer, on world clips
      audio-tokenizer   the SoundStream style audio tokenizer, on world sounds
      tokens            world clips through both tokenizers (--work/tokens.npz)
      video-decoder     the video decoder again, alone, on the dataset's fixed codes
      llm               the prefix LM and the text projection, on every task
      superres          the 64 -> 128 super-resolution stage
      sr-fusion         the fusion of its decode with the clip's (vp.models.sr_fusion)
      figures           docs/training.md's pictures (--out: their folder)
    """
    try:
        report = run_stage(stage, work=work, out=out, steps=steps, threads=threads, round_=round_, peak_lr=peak_lr)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report)


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--bundle", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="Evaluate this bundle through the runtime (ONNX Runtime or TensorRT).")
@click.option("--reference", is_flag=True, help="Evaluate the torch reference models instead of a bundle.")
@click.option("--weights", type=click.Path(exists=True, file_okay=False, path_type=Path), default=None,
              help="With --reference: a weights folder [default: the demo preset's shipped weights].")
@click.option("--backend", type=click.Choice(["auto", "ort", "trt"]), default="auto", show_default=True)
@click.option("--cases", type=click.IntRange(min=1), default=24, show_default=True,
              help="Held-out cases per task (case i: world seed HELD_OUT_SEED + i, generation seed i).")
@click.option("--first", type=click.IntRange(min=0), default=0, show_default=True,
              help="The first case to score (cases from 48 on: the split for choosing sampling settings).")
@click.option("--tasks", default=",".join(TASKS), show_default=True, help="Comma-separated tasks to score.")
@click.option("--temperature", type=click.FloatRange(min=0), default=None, help="Override the bundle's default.")
@click.option("--cfg", "cfg_scale", type=click.FloatRange(min=0), default=None, help="Override the CFG scale.")
@click.option("--per-case", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Also write every case's result to this JSON file (for --against).")
@click.option("--against", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
              help="A --per-case file of the same cases: also print, row by row, the cases only it got right "
                   "and the cases only this run got right (e.g. an INT8 bundle against fp32).")
def eval_main(bundle, reference, weights, backend, cases, first, tasks, temperature, cfg_scale, per_case, against):
    """Score the demo model on held-out prompts and seeds: colour, direction, shape and pitch of
    generated clips, read back from mp4 and measured by plain image/audio analysis."""
    import json

    from vp.training.evaluator import BundleGenerator, ReferenceGenerator, Report, evaluate

    if bool(bundle) == reference:
        raise click.UsageError("give exactly one of --bundle DIR and --reference")
    wanted = tuple(t.strip() for t in tasks.split(",") if t.strip())
    unknown = set(wanted) - set(TASKS)
    if unknown:
        raise click.BadParameter(f"unknown tasks {sorted(unknown)}; choose from {', '.join(TASKS)}",
                                 param_hint="--tasks")
    base = None
    if against:
        try:
            base = Report.from_dict(json.loads(against.read_text()))
        except (ValueError, KeyError, TypeError, AttributeError) as error:
            raise click.BadParameter(f"{against} is not a --per-case file ({error!r})", param_hint="--against")
        if base.first != first or any(n != cases for n in base.counts.values()):
            raise click.BadParameter(f"{against} holds cases {base.first}-{base.first + max(base.counts.values()) - 1}"
                                     f", this run scores {first}-{first + cases - 1}", param_hint="--against")
    sampling = {k: v for k, v in (("temperature", temperature), ("cfg_scale", cfg_scale)) if v is not None}
    progress = lambda line: click.echo(line, err=True)  # noqa: E731
    try:
        if reference:
            from vp.models import load

            report = evaluate(ReferenceGenerator(load("demo", weights)), cases=cases, first=first, tasks=wanted,
                              progress=progress, **sampling)
        else:
            from vp.runtime.pipeline import Pipeline

            with Pipeline.load(bundle, backend=backend) as pipeline:
                report = evaluate(BundleGenerator(pipeline), cases=cases, first=first, tasks=wanted, progress=progress,
                                  **sampling)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report.table())
    if per_case:
        per_case.write_text(json.dumps(report.to_dict()))
    if base is not None:
        click.echo(f"\nagainst {against} (lost: cases only it got right; won: only this run):")
        click.echo(report.paired(base))
