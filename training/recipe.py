"""The demo model's training recipe: which stage trains what, from which inputs, into which file.

    video-tokenizer   world clips -> video_tokenizer.safetensors
    audio-tokenizer   world sounds -> audio_tokenizer.safetensors
    tokens            world clips through both tokenizers -> work/tokens.npz
    video-decoder     the token dataset's codes -> video_tokenizer.safetensors (decoder retrained)
    llm               token dataset + captions -> llm.safetensors, text_projection.safetensors
                      (--round N > 1: two more cycles from the llm.safetensors already in `out`)
    superres          token dataset (64 and 128 renders) -> superres_0.safetensors
    sr-fusion         world clips through the video tokenizer and superres_0, 128 renders
                      -> work/sr_fusion/pairs-<digest>.npz -> sr_fusion.safetensors

Every stage starts from the demo preset's seeded init, reads the weights of
the stages before it from `out`, and writes its own component there in fp16
when it is done (the shipped weights; checkpoints stay in `work`).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
from torch import nn

from vp.models.audio_tokenizer import AudioTokenizer
from vp.models.checkpoint import Models, build, shipped_weights
from vp.models.presets import Preset, get_preset
from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.media import atomic_path
from vp.runtime.layout import SequenceBuilder
from vp.training import audio_tokenizer, llm, sr_fusion, superres, tokens, video_decoder, video_tokenizer
from vp.training.world import World, WorldConfig

PRESET = "demo"
STAGES = ("video-tokenizer", "audio-tokenizer", "tokens", "video-decoder", "llm", "superres", "sr-fusion", "figures")
FIGURE_PROMPTS = ("a red circle moving left", "one green square that moves up",
                  "a small yellow triangle drifting right", "a big white ball drifting down")


def world_config(preset: Preset) -> WorldConfig:
    """The world whose clips have the preset's geometry and sample rate."""
    c = preset.clip
    return WorldConfig(frames=c.frames, height=c.height, width=c.width, fps=c.fps,
                       sample_rate=preset.audio_tokenizer.sample_rate)


def run_stage(stage: str, *, work: Path, out: Path | None = None, steps: int | None = None,
              threads: int | None = None, round_: int = 1, peak_lr: float | None = None) -> str:
    """Train `stage` (resuming from `work`), write its weights into `out`; a one-paragraph report.

    steps, peak_lr: override the stage recipe's step count and peak learning rate (the first
    cycle's; a warm restart peaks at half the one before it).

    round_: the llm stage's round (llm.round_recipe); a round after the first starts from the weights
    in `out`.
    """
    if stage not in STAGES:
        raise ValueError(f"unknown stage {stage!r}; stages: {', '.join(STAGES)}")
    if round_ != 1 and stage != "llm":
        raise ValueError(f"--round applies to the llm stage only, not {stage}")
    if threads:
        torch.set_num_threads(threads)
    preset = get_preset(PRESET)
    out = Path(out) if out is not None else shipped_weights(preset)
    work = Path(work)
    world = World(world_config(preset))
    if peak_lr is not None and stage in ("tokens", "figures"):
        raise ValueError(f"--peak-lr applies to stages that train, not {stage}")
    overrides = {**({"steps": steps} if steps else {}), **({"lr": peak_lr} if peak_lr is not None else {})}
    if stage == "video-tokenizer":
        return _video_tokenizer(preset, world, work, out, video_tokenizer.VideoTokenizerRecipe(**overrides))
    if stage == "audio-tokenizer":
        return _audio_tokenizer(preset, world, work, out, audio_tokenizer.AudioTokenizerRecipe(**overrides))
    if stage == "tokens":
        recipe = tokens.TokenRecipe(**({"clips": steps} if steps else {}))
        models = _load(preset, out, "video_tokenizer", "audio_tokenizer")
        path = tokens.build(models.video_tokenizer, models.audio_tokenizer, world, recipe, work / "tokens.npz")
        return f"token dataset of {recipe.clips} clips in {path}"
    if stage == "video-decoder":
        return _video_decoder(preset, world, work, out, video_decoder.VideoDecoderRecipe(**overrides))
    if stage == "llm":
        return _llm(preset, work, out, replace(llm.round_recipe(round_), **overrides), round_)
    if stage == "superres":
        return _superres(preset, work, out, superres.SuperResRecipe(**overrides))
    if stage == "sr-fusion":
        return _sr_fusion(preset, world, work, out, sr_fusion.SRFusionRecipe(**overrides))
    return _figures(preset, world, work, shipped_weights(preset), out if out != shipped_weights(preset) else None)


def _video_tokenizer(preset, world, work, out, recipe) -> str:
    model = _seeded(lambda: VideoTokenizer(preset.video_tokenizer), recipe.seed)
    video_tokenizer.train(model, recipe, work, world.config)
    _save(model, out, "video_tokenizer", preset)
    scores = video_tokenizer.held_out_psnr(model, world)
    structure = video_tokenizer.held_out_psnr(model, world, structure=True)
    return (f"video tokenizer: held-out PSNR {np.mean(scores):.2f} dB (min {np.min(scores):.2f}), "
            f"structure videos {np.mean(structure):.2f} dB; weights in {out}")


def _video_decoder(preset, world, work, out, recipe) -> str:
    model = _load(preset, out, "video_tokenizer").video_tokenizer
    before = video_tokenizer.held_out_psnr(model, world)
    video_decoder.train(model, recipe, work, tokens.load(work / "tokens.npz"), world.config)
    _save(model, out, "video_tokenizer", preset)
    scores = video_tokenizer.held_out_psnr(model, world)
    return (f"video decoder: held-out PSNR {np.mean(scores):.2f} dB (min {np.min(scores):.2f}), "
            f"{np.mean(before):.2f} dB before; weights in {out}")


def _audio_tokenizer(preset, world, work, out, recipe) -> str:
    model = _seeded(lambda: AudioTokenizer(preset.audio_tokenizer), recipe.seed)
    audio_tokenizer.train(model, recipe, work, world)
    _save(model, out, "audio_tokenizer", preset)
    errors = audio_tokenizer.held_out_pitch_errors(model, world)
    return (f"audio tokenizer: pitch within 3% in {np.mean(np.array(errors) <= 0.03):.0%} of held-out clips "
            f"(median error {np.median(errors):.2%}); weights in {out}")


def _llm(preset, work, out, recipe, round_: int) -> str:
    # the LLM stage reads codes from the token dataset, not the tokenizers; a later round starts
    # from the LLM and text projection the rounds before it trained
    models = _load(preset, out, *(("llm", "text_projection") if round_ > 1 else ()))
    model = llm.DemoLM(models.llm, models.text_encoder.projection).requires_grad_(True)
    builder = SequenceBuilder(preset.vocab, preset.geometry)
    data = tokens.load(work / "tokens.npz")
    llm.train(model, recipe, work, data, builder, llm.TextCache(models.text_encoder), llm.round_folder(round_))
    _save(model.llm, out, "llm", preset)
    _save(model.text_projection, out, "text_projection", preset)
    return f"llm and text projection trained (round {round_}, {recipe.steps} steps); weights in {out}"


def _superres(preset, work, out, recipe) -> str:
    models = _load(preset, out, "video_tokenizer", "audio_tokenizer", "llm", "text_projection")
    stage = models.superres[0].requires_grad_(True)
    data = tokens.load(work / "tokens.npz")
    superres.train(stage, models.text_encoder.projection, recipe, work, data, llm.TextCache(models.text_encoder))
    _save(stage, out, "superres_0", preset)
    return f"super-resolution trained ({recipe.steps} steps); weights in {out}"


def _sr_fusion(preset, world, work, out, recipe) -> str:
    inputs = ("video_tokenizer", "text_projection", "superres_0")
    models = _load(preset, out, *inputs)
    # made once per set of input weights: a resumed stage trains on the same examples, and one after a
    # retrained decoder or SR stage on new ones (its checkpoint still resumes: clear --work/sr_fusion)
    digest = hashlib.sha256(f"{recipe.clips},{recipe.seed}".encode())
    for name in inputs:
        digest.update((out / f"{name}.safetensors").read_bytes())
    path = work / "sr_fusion" / f"pairs-{digest.hexdigest()[:12]}.npz"
    if not path.is_file():
        hires = World(world.config.doubled())
        sr_fusion.build_pairs(models, world, hires, recipe, path)
    fusion = models.sr_fusion.start_at_bicubic().requires_grad_(True)  # a resumed stage loads its checkpoint
    sr_fusion.train(fusion, recipe, work, dict(np.load(path)))
    _save(fusion, out, "sr_fusion", preset)
    return f"super-resolution fusion trained ({recipe.steps} steps on {recipe.clips} clips); weights in {out}"


def _figures(preset, world, work, weights: Path, folder: Path | None) -> str:
    """docs/training.md's pictures (into `folder`, docs/images by default) from the stage logs in
    `work` and the weights in `weights`: loss curves, tokenizer reconstructions, generated clips,
    super-resolution (held-out case 0, as `vp-eval` scores it)."""
    from vp.runtime.conditioning import frames_from_model, video_to_model
    from vp.training import figures
    from vp.training.captions import HELD_OUT_TEMPLATES, caption
    from vp.training.world import HELD_OUT_SEED

    folder = folder or Path("docs/images")
    written = [figures.loss_curves(work, folder / "loss_curves.png")]
    models = _load(preset, weights, *[name for name in ("video_tokenizer", "audio_tokenizer", "llm",
                                                          "text_projection", "superres_0", "sr_fusion")
                                        if (weights / f"{name}.safetensors").is_file()])

    @torch.no_grad()
    def round_trip(frames):
        codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(frames)))
        return frames_from_model(models.video_tokenizer.decode(codes)[0].numpy())

    clips = [world.clip(HELD_OUT_SEED + i).frames for i in range(4)]
    written.append(figures.reconstructions(round_trip, clips, folder / "tokenizer_reconstructions.png"))
    if (weights / "llm.safetensors").is_file():
        from vp.models.reference import generate

        rows = [(f"t2v: {p}", generate(models, task="t2v", prompt=p, seed=0).frames) for p in FIGURE_PROMPTS]
        written.append(figures.frame_grid(rows, folder / "generated_t2v.png"))
    if (weights / "sr_fusion.safetensors").is_file():
        hires = World(world.config.doubled())
        clip = world.clip(HELD_OUT_SEED)
        truth = hires.render(clip.attributes, seed=HELD_OUT_SEED).frames
        prompt = caption(clip.attributes, HELD_OUT_TEMPLATES[0])
        written.append(figures.super_resolution(models, clip.frames, truth, prompt, 0,
                                                folder / "super_resolution.png"))
    return "figures: " + ", ".join(str(p) for p in written)


def _load(preset: Preset, out: Path, *names: str) -> Models:
    """The preset's seeded models with the components `names` loaded from `out` (earlier stages' weights)."""
    from safetensors.torch import load_file

    models = build(preset, seed=0)
    parts = models.trained_components()
    for name in names:
        path = out / f"{name}.safetensors"
        if not path.is_file():
            raise ValueError(f"{path} is missing: train the stage that makes it first (see vp-train --help)")
        parts[name].load_state_dict(load_file(str(path)))
    return models


def _seeded(make, seed: int) -> nn.Module:
    with torch.random.fork_rng():
        torch.manual_seed(seed)
        return make()


def _save(module: nn.Module, out: Path, name: str, preset: Preset) -> None:
    """Write `name`.safetensors (fp16 floats) and the preset's config into `out`."""
    from safetensors.torch import save_file

    out.mkdir(parents=True, exist_ok=True)
    tensors = {k: (v.half() if v.is_floating_point() else v).contiguous() for k, v in module.state_dict().items()}
    with atomic_path(out / f"{name}.safetensors", ".safetensors") as tmp:
        save_file(tensors, str(tmp))
    (out / "preset.json").write_text(json.dumps(preset.to_dict(), indent=2))
