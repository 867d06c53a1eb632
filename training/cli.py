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
def main(stage, work, out, steps, threads):
    """Train STAGE of the demo model (see docs/training.md for the recipe and the wall time of each)."""
    try:
        report = run_stage(stage, work=work, out=out, steps=steps, threads=threads)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    click.echo(report)
