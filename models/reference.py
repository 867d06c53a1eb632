"""The torch reference generation loop: the oracle the runtime is compared with.

generate(models, task=..., prompt=..., seed=...) runs one sample of any task:
text encoding, the sequence layout (vp.runtime.layout), LLM prefill and decode
with a KV cache, classifier-free guidance, sampling (vp.runtime.sampling, the
same numpy code the runtime draws with), optional super-resolution
(vp.runtime.superres), and decoding to frames and waveform.

Media inputs are arrays: image [H, W, 3] uint8, video [T, H, W, 3] uint8
(T = 1 + 4k frames), audio [N] float in [-1, 1] at the preset's sample rate,
mask [H, W] or [T, H, W] bool (True = the pixels to fill, for inpaint/outpaint).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import contextmanager

import numpy as np
import torch

from vp.models.checkpoint import Models
from vp.models.prefix_lm import KVCache
from vp.runtime.conditioning import MediaSpec, fit_audio, frames_from_model, prepare_media, video_to_model
from vp.runtime.layout import SequenceBuilder
from vp.runtime.request import MAX_SEED, check_count, check_media, check_prompt, check_task
from vp.runtime.result import GenerationResult, Sample
from vp.runtime.sampling import SamplingConfig, make_rng, sample_guided
from vp.runtime.superres import SuperResStage, check_superres, check_upscale_input, super_resolve
from vp.runtime.vocab import Task


def generate(
    models: Models,
    *,
    task: Task | str = Task.TEXT_TO_VIDEO,
    prompt: str = "",
    image: np.ndarray | None = None,
    video: np.ndarray | None = None,
    audio: np.ndarray | None = None,
    mask: np.ndarray | None = None,
    seed: int = 0,
    with_audio: bool | None = None,
    portrait: bool = False,
    sr: bool = False,
    sampling: SamplingConfig | None = None,
    on_token: Callable[[int, int], None] | None = None,
    timings: dict | None = None,
    **sampling_overrides,
) -> GenerationResult:
    """One sample of `task`. Sampling defaults come from the preset (its defaults for `task`); keyword
    overrides (temperature=0 for greedy, top_k, top_p, cfg_scale) replace them.
    with_audio defaults to True for text-to-video and unconditional generation.
    on_token(done, total) is called after each output token (progress bars).
    timings, when given, receives ms per stage and "decode_step_ends" (the
    perf_counter() after each single-token feed), for vp bench.
    """
    clock = _Clock(timings)
    task = check_task(task)
    prompt = check_prompt(task, prompt)
    seed = check_count("seed", seed, 0, MAX_SEED)
    check_media(task, image=image, video=video, audio=audio, mask=mask)
    preset = models.preset
    sampling = dataclasses.replace(sampling or preset.sampling.for_task(task), **sampling_overrides)
    if with_audio is None:
        with_audio = task in {Task.TEXT_TO_VIDEO, Task.UNCONDITIONAL}
    if sr:
        _check_superres(preset, task, portrait)
    rng = make_rng(seed)
    with clock("text_encoder"):
        text = models.text_encoder.encode([prompt]) if prompt and _uses_text(task) else None
    text_len = 0 if text is None else int(text.mask.sum())
    video_codes, audio_codes = _conditioning(models, task, image, video, audio, mask)
    builder = SequenceBuilder(preset.vocab, preset.geometry)
    inputs = dict(video=video_codes, audio=audio_codes, with_audio=with_audio, portrait=portrait)
    layout = builder.build(task, text_len=text_len, **inputs)
    branches = [(layout, text)]
    if sampling.guided and text_len:
        branches.append((builder.build(task, text_len=0, **inputs), None))
    tokens = _decode(models, branches, sampling, rng, on_token, clock)
    vcodes, acodes = layout.split_output(tokens, preset.vocab)
    high = _super_resolve(models, vcodes, text, rng) if sr and vcodes is not None else None
    with clock("video_decoder"):
        frames = _frames(models, vcodes) if high is None else upscaled_frames(models, vcodes, high)
    with clock("audio_decoder"):
        audio = _waveform(models, acodes)
    return GenerationResult(layout=layout, samples=[Sample(tokens=tokens, frames=frames, audio=audio)],
                            sample_rate=preset.audio_tokenizer.sample_rate, fps=preset.clip.fps)


@torch.no_grad()
def reconstruct(models: Models, video: np.ndarray) -> np.ndarray:
    """A clip (video [T, H, W, 3] uint8, T = 1 + 4k) through the video tokenizer: encode, decode."""
    codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(video)))[0].numpy()
    return _frames(models, codes)


@torch.no_grad()
def upscale(models: Models, video: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
    """A clip of the preset's size (video [T, H, W, 3] uint8) through the super-resolution stages:
    frames at their output size. The prompt, if given, conditions them as in generation."""
    preset = models.preset
    _check_superres(preset, Task.TEXT_TO_VIDEO, portrait=False)
    codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(video)))[0].numpy()
    c = preset.clip
    check_upscale_input(video, codes, _stages(models.preset), (c.frames, c.height, c.width))
    return upscaled_frames(models, codes, sr_codes(models, codes, prompt=prompt, seed=seed))


@torch.no_grad()
def sr_codes(models: Models, codes: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
    """Low-res video codes [t, h, w] of a whole clip -> the codes [t, 2^s h, 2^s w] of the s
    super-resolution stages; the prompt, if given, conditions them (Pipeline.super_resolve)."""
    _check_superres(models.preset, Task.TEXT_TO_VIDEO, portrait=False)
    text = models.text_encoder.encode([prompt]) if prompt else None
    return _super_resolve(models, codes, text, make_rng(seed))


@torch.no_grad()
def upscaled_frames(models: Models, low: np.ndarray, high: np.ndarray) -> np.ndarray:
    """The clip's codes [t, h, w] and the SR stages' codes of it [t, 2^s h, 2^s w] -> frames
    [1 + 4(t - 1), 2^s H, 2^s W, 3] uint8: both decoded and fused where the preset has an SR
    fusion (vp.models.sr_fusion), else the SR codes decoded alone (as in the paper)."""
    decode = models.video_tokenizer.decode
    video = decode(torch.from_numpy(high)[None])
    if models.sr_fusion is not None:
        video = models.sr_fusion(decode(torch.from_numpy(low)[None]), video)
    return frames_from_model(video[0].numpy())


class _Clock:
    """Stage timer writing ms into a caller's dict (or nothing)."""

    def __init__(self, timings: dict | None):
        self.timings = timings

    @contextmanager
    def __call__(self, stage: str):
        start = time.perf_counter()
        yield
        if self.timings is not None:
            self.timings[stage] = self.timings.get(stage, 0.0) + (time.perf_counter() - start) * 1e3

    def step_end(self) -> None:
        if self.timings is not None:
            self.timings.setdefault("decode_step_ends", []).append(time.perf_counter())


def _stages(preset) -> list[SuperResStage]:
    return [SuperResStage.from_config(dataclasses.asdict(config)) for config in preset.superres]


def _check_superres(preset, task: Task, portrait: bool) -> None:
    grid = preset.geometry.portrait_grid if portrait else preset.geometry.video_grid
    check_superres(_stages(preset), task, grid, f"preset {preset.name}")


def _uses_text(task: Task) -> bool:
    return task not in {Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO}


@torch.no_grad()
def _decode(models: Models, branches, sampling: SamplingConfig, rng: np.random.Generator,
            on_token: Callable[[int, int], None] | None, clock: _Clock) -> np.ndarray:
    """Prefill each branch (conditional, then unconditional for CFG), then walk the
    output plan: forced ids are fed, sampled ids are drawn from the CFG-mixed
    logits of the last position. Runs of forced ids are fed in one forward.
    """
    llm = models.llm
    layout = branches[0][0]
    caches, logits = [], []
    start = time.perf_counter()
    for branch, text in branches:
        cache = KVCache(llm.config, 1, branch.total_len)
        ids = torch.from_numpy(branch.prefix)[None]
        prefix_lens = torch.tensor([branch.prefix_len])
        embeds = embed_mask = None
        if text is not None:
            embeds = torch.zeros(1, branch.prefix_len, llm.config.d_model)
            embeds[0, branch.text_start:branch.text_start + branch.text_len] = text.embeddings[0, :branch.text_len]
            embed_mask = torch.from_numpy(branch.text_mask())[None]
        logits.append(llm(ids, prefix_lens, embeds, embed_mask, cache=cache)[0, -1].numpy())
        caches.append((cache, prefix_lens))
    if clock.timings is not None:
        clock.timings["llm_prefill"] = (time.perf_counter() - start) * 1e3
    out: list[int] = []
    pending: list[int] = []
    positions = layout.positions()
    for forced, low, high in positions:
        if forced < 0:
            if pending:
                logits = _feed(llm, caches, pending)
                if len(pending) == 1:
                    clock.step_end()
                pending = []
            uncond = logits[1][None] if len(logits) > 1 else None
            forced = int(sample_guided(logits[0][None], uncond, low=low, high=high, config=sampling, rngs=[rng])[0])
        out.append(forced)
        pending.append(forced)
        if on_token is not None:
            on_token(len(out), len(positions))
    return np.array(out, np.int64)


def _feed(llm, caches, ids: list[int]) -> list[np.ndarray]:
    """Append `ids` to every branch's cache; the logits after the last one, per branch."""
    x = torch.tensor([ids])
    return [llm(x, prefix_lens, cache=cache)[0, -1].numpy() for cache, prefix_lens in caches]


@torch.no_grad()
def _conditioning(models: Models, task: Task, image, video, audio, mask):
    """Encode the task's media inputs to (video codes [t, h, w], audio codes [frames, levels])."""
    preset = models.preset
    spec = MediaSpec(fps=preset.clip.fps, sample_rate=preset.audio_tokenizer.sample_rate,
                     audio_samples=preset.audio_samples, frames=preset.clip.frames,
                     temporal_factor=preset.video_tokenizer.temporal_factor)
    video, wave = prepare_media(task, spec, image=image, video=video, audio=audio, mask=mask)
    video_codes = audio_codes = None
    if video is not None:
        video_codes = models.video_tokenizer.encode(torch.from_numpy(video_to_model(video)))[0].numpy()
    if wave is not None:
        audio_codes = models.audio_tokenizer.encode(torch.from_numpy(wave)[None])[0].numpy()
    return video_codes, audio_codes


@torch.no_grad()
def _super_resolve(models: Models, codes: np.ndarray, text, rng: np.random.Generator) -> np.ndarray:
    """Low-res codes [t, h, w] -> codes [t, 2^s h, 2^s w] through every SR stage."""

    def run_stage(index: int, *inputs: np.ndarray) -> np.ndarray:
        return models.superres[index](*(torch.from_numpy(x) for x in inputs)).numpy()

    text = None if text is None else (text.embeddings.numpy(), text.mask.numpy())
    return super_resolve(codes, _stages(models.preset), text, rng, run_stage)


@torch.no_grad()
def _frames(models: Models, codes: np.ndarray | None) -> np.ndarray:
    if codes is None:
        c = models.preset.clip
        return np.zeros((0, c.height, c.width, 3), np.uint8)
    return frames_from_model(models.video_tokenizer.decode(torch.from_numpy(codes)[None])[0].numpy())


@torch.no_grad()
def _waveform(models: Models, codes: np.ndarray | None) -> np.ndarray:
    if codes is None:
        return np.zeros(0, np.float32)
    wave = models.audio_tokenizer.decode(torch.from_numpy(codes)[None])[0].numpy()
    return fit_audio(wave, models.preset.audio_samples)
