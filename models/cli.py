"""`vp-reference`: generate a clip with the torch reference models (the oracle).

A thin click layer over vp.models.load and vp.models.reference.generate.
"""

from __future__ import annotations

import click

from vp.models.presets import PRESETS
from vp.runtime.sampling import SamplingConfig

_DEFAULTS = SamplingConfig()


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.argument("prompt", default="")
@click.option("--preset", type=click.Choice(list(PRESETS)), default="tiny", show_default=True,
              help="Model preset (random weights unless --weights is given).")
@click.option("--weights", type=click.Path(exists=True, file_okay=False), default=None,
              help="Folder of safetensors weights (vp.models.save).")
@click.option("--task", type=click.Choice(["t2v", "uncond"]), default="t2v", show_default=True,
              help="Text-to-video or unconditional; media-conditioned tasks come with `vp generate`.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of weights init and sampling.")
@click.option("--temperature", type=float, default=_DEFAULTS.temperature, show_default=True, help="0 = greedy.")
@click.option("--top-k", type=int, default=_DEFAULTS.top_k, show_default=True, help="0 = off.")
@click.option("--top-p", type=float, default=_DEFAULTS.top_p, show_default=True, help="1.0 = off.")
@click.option("--cfg", "cfg_scale", type=float, default=_DEFAULTS.cfg_scale, show_default=True,
              help="Classifier-free guidance scale; 1.0 = off.")
@click.option("--sr", is_flag=True, help="Run the super-resolution stage(s).")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default="vp-reference.mp4", show_default=True,
              help="Where to write the .mp4 (H.264 + AAC).")
def main(prompt, preset, weights, task, seed, temperature, top_k, top_p, cfg_scale, sr, output):
    """Generate one clip for PROMPT with the PyTorch reference models and write an .mp4."""
    from tqdm import tqdm

    from vp.models.checkpoint import load
    from vp.models.reference import generate
    from vp.runtime.media import write_mp4

    try:
        sampling = SamplingConfig(temperature=temperature, top_k=top_k, top_p=top_p, cfg_scale=cfg_scale)
        models = load(preset, weights, seed=seed)
        with tqdm(desc="tokens", unit="tok") as bar:

            def advance(done: int, total: int) -> None:
                bar.total = total
                bar.update(1)

            result = generate(models, task=task, prompt=prompt, seed=seed, sampling=sampling, sr=sr,
                              on_token=advance)
        path = write_mp4(output, result.frames, models.preset.clip.fps, result.audio, result.sample_rate)
    except ValueError as error:
        raise click.ClickException(str(error)) from None
    seconds = len(result.frames) / models.preset.clip.fps
    click.echo(f"wrote {path} ({len(result.frames)} frames, {seconds:.3f} s, {len(result.tokens)} tokens)")
