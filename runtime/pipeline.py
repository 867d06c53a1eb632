"""The generation pipeline: a bundle's components chained per task, torch-free.

    pipeline = Pipeline.load("bundles/tiny")                  # backend="auto"
    result = pipeline.generate(task="t2v", prompt="a red fox", seed=0)
    result.frames  # [17, H, W, 3] uint8; result.audio [34000] float32

Stages: text encoder -> media encoders (conditioning) -> LLM (paged KV cache,
CFG) -> super-resolution (optional) -> video and audio decoders. A seeded run
draws the same tokens as `vp.models.reference.generate` with the same seed:
sample i uses the generator of seed + i for its tokens and its super-resolution.
"""

from __future__ import annotations

import dataclasses
import itertools
import logging
import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vp.engines.contract import DECODE, PREFILL
from vp.runtime.backends import open_backend
from vp.runtime.bundle import Bundle
from vp.runtime.conditioning import fit_audio, frames_from_model, prepare_media, video_to_model
from vp.runtime.kv_cache import KVStats
from vp.runtime.kv_pool import KVPoolLayout
from vp.runtime.kv_reservations import KVReservations
from vp.runtime.request import MAX_SEED, check_count, check_media, check_prompt, check_task
from vp.runtime.result import FrameChunk, GenerationResult, Sample
from vp.runtime.sampling import SamplingConfig, make_rng
from vp.runtime.superres import SuperResStage, check_superres, check_upscale_input, super_resolve
from vp.runtime.token_generator import Branch, LoopTimings, TokenGenerator
from vp.runtime.layout import SequenceLayout
from vp.runtime.video_stream import VideoDecodeStream
from vp.runtime.vocab import Task

log = logging.getLogger("vp.runtime")

_TEXT_TASKS = frozenset(Task) - {Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO}


class Pipeline:
    """Chains the components of one bundle.

    Safe to share between threads: generations hold the pipeline's lock (they run one after
    another, each as it would alone: same seeds, same tokens), and a stream() takes it for each
    step, so other calls may run between the steps of an unfinished stream. Every generation's
    KV sequences carry a run id of their own.
    """

    def __init__(self, bundle: Bundle, backend, why: str):
        self.bundle = bundle
        self.backend = backend
        self.backend_reason = why
        self._sessions: dict = {}
        self._lock = threading.RLock()
        self._runs = itertools.count()  # run ids: the KV sequences of concurrent generations never collide
        if "llm" not in bundle.manifest.components:
            raise ValueError(f"bundle {bundle.path} has no llm graph; export it with vp-export (all components)")
        llm = bundle.manifest.components["llm"].contract
        self.block_size = KVPoolLayout.from_contract(llm).block_size
        self._kv = KVReservations(backend, self.block_size, self._lock)
        self._batches = (llm.profile(DECODE).dims["batch"][2], llm.profile(PREFILL).dims["batch"][2])
        self.d_model = bundle.manifest.preset["llm"]["d_model"]
        configs = bundle.manifest.preset.get("superres", ())
        self._superres = [SuperResStage.from_config(c) for c in configs][:len(bundle.superres_stages)]

    @classmethod
    def load(cls, bundle: str | Path, backend: str = "auto", verify: bool = True,
             expect_digest: str | None = None) -> Pipeline:
        """Open `bundle` with `backend` ("auto", "ort" or "trt"); the choice and why are logged.
        expect_digest: the bundle's digest (`vp info --sha256`) an app pins; another bundle is refused."""
        opened = Bundle.open(bundle, verify=verify, expect_digest=expect_digest)
        chosen, why = open_backend(backend, opened)
        log.info("backend %s: %s", chosen.name, why)
        return cls(opened, chosen, why)

    def close(self) -> None:
        for session in self._sessions.values():
            session.close()
        self._kv.close()
        self._sessions = {}

    def __enter__(self) -> Pipeline:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def session(self, component: str):
        with self._lock:
            if component not in self._sessions:
                self._sessions[component] = self.backend.session(component)
            return self._sessions[component]

    # -- generation ---------------------------------------------------------------------------------

    def generate(
        self,
        *,
        task: Task | str = Task.TEXT_TO_VIDEO,
        prompt: str = "",
        image: np.ndarray | None = None,
        video: np.ndarray | None = None,
        audio: np.ndarray | None = None,
        mask: np.ndarray | None = None,
        seed: int = 0,
        num_samples: int = 1,
        with_audio: bool | None = None,
        portrait: bool = False,
        sr: bool = False,
        sampling: SamplingConfig | None = None,
        on_token: Callable[[int, int], None] | None = None,
        **sampling_overrides,
    ) -> GenerationResult:
        """Generate num_samples samples of `task`; arguments as vp.models.reference.generate
        (media as arrays: image [H, W, 3] uint8, video [T, H, W, 3] uint8, audio [N] float32,
        mask [H, W] or [T, H, W] bool). on_token(done, total) reports progress."""
        run = self._prepare(task, prompt, image, video, audio, mask, seed, num_samples, with_audio, portrait, sr,
                            sampling, sampling_overrides)
        with self._lock:
            tokens = self._tokens(run, on_token)
            return self._finish(run, tokens)

    def long_video(self, *, seconds: float, prompt: str = "", video: np.ndarray | None = None, seed: int = 0,
                   on_token: Callable[[int, int], None] | None = None, **kwargs) -> GenerationResult:
        """A video of `seconds` seconds: a text-to-video clip (or the given `video`), extended by
        repeated 1-second continuations (task "long": the last fps + 1 frames condition the next
        clip, whose new frames are appended). Step k samples with seed + k. No audio."""
        fps = self.bundle.media.fps
        target = round(seconds * fps) + 1
        if seconds <= 0:
            raise ValueError(f"seconds must be positive, got {seconds}")
        if kwargs.pop("num_samples", 1) != 1 or kwargs.get("sr"):
            raise ValueError("long videos are one sample without super-resolution")
        kwargs.pop("with_audio", None)
        results, frames = [], video
        if frames is None:
            results.append(self.generate(task=Task.TEXT_TO_VIDEO, prompt=prompt, seed=seed, with_audio=False,
                                         on_token=on_token, **kwargs))
            frames = results[0].frames
        while len(frames) < target:
            step = self.generate(task=Task.LONG_VIDEO, prompt=prompt, video=frames, seed=seed + len(results),
                                 on_token=on_token, **kwargs)
            results.append(step)
            frames = np.concatenate([frames, step.frames[fps + 1:]])
        last = results[-1] if results else None
        if last is None:
            raise ValueError(f"the given video already holds {len(frames)} frames, {seconds} s needs {target}")
        timings = {k: sum(r.timings.get(k, 0.0) for r in results) for k in last.timings}
        tokens = np.concatenate([r.tokens for r in results])
        return GenerationResult(layout=last.layout, samples=[Sample(tokens=tokens, frames=frames[:target],
                                                                    audio=np.zeros(0, np.float32))],
                                sample_rate=last.sample_rate, fps=fps, timings=timings, kv_stats=last.kv_stats)

    def stream(self, *, on_token: Callable[[int, int], None] | None = None, **kwargs) -> Iterator[FrameChunk]:
        """generate() (same keywords) that yields the frames of each latent frame as soon as
        the LLM has produced it, decoding each latent frame once (the causal decoder makes them
        final; vp.runtime.video_stream). One sample, no super-resolution."""
        args = dict(_GENERATE_DEFAULTS)
        overrides = {k: v for k, v in kwargs.items() if k not in args}
        args.update({k: v for k, v in kwargs.items() if k in args}, sampling_overrides=overrides)
        if args["sr"] or args["num_samples"] != 1:
            raise ValueError("stream() yields one sample without super-resolution")
        run = self._prepare(**args)
        layout, vocab = run.layout, self.bundle.vocab
        if layout.video_grid is None:
            raise ValueError(f"task {layout.task.value} generates no video to stream")
        grid = tuple(layout.video_grid[1:])
        decoder = VideoDecodeStream(self.session("video_decoder_first"), self.session("video_decoder_step"), *grid)
        lo, hi = vocab.visual_range()
        codes: list[int] = []
        latent_frame = 0
        for position, ids in enumerate(self._token_stream(run)):
            if on_token:
                on_token(position + 1, layout.output_len)
            if lo <= ids[0] < hi:
                codes.append(int(ids[0]) - lo)
                if len(codes) == grid[0] * grid[1]:
                    yield FrameChunk(latent_frame=latent_frame, frames=decoder.push(np.array(codes).reshape(grid)))
                    codes, latent_frame = [], latent_frame + 1

    def reconstruct(self, video: np.ndarray) -> np.ndarray:
        """A clip (video [T, H, W, 3] uint8 of the bundle's size, T = 1 + 4k) through the video
        tokenizer, encode then decode: what the tokens keep of it."""
        _check_video(video, self.bundle)
        (codes,) = self.session("video_encoder").run(video=video_to_model(video))
        return self.decode_video(codes[0])

    def upscale(self, video: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
        """A clip of the bundle's clip size (video [T, H, W, 3] uint8) through the super-resolution
        stages: frames at their output size. The prompt, if given, conditions them as in generation."""
        self._check_superres(Task.TEXT_TO_VIDEO, portrait=False)
        _check_video(video, self.bundle)
        (codes,) = self.session("video_encoder").run(video=video_to_model(video))
        c = self.bundle.manifest.clip
        check_upscale_input(video, codes[0], self._superres, (c["frames"], c["height"], c["width"]))
        return self.upscaled_frames(codes[0], self.super_resolve(codes[0], prompt=prompt, seed=seed))

    def super_resolve(self, codes: np.ndarray, *, prompt: str = "", seed: int = 0) -> np.ndarray:
        """Low-res video codes [t, h, w] of a whole clip -> the codes [t, 2^s h, 2^s w] of the s
        super-resolution stages; the prompt, if given, conditions them."""
        self._check_superres(Task.TEXT_TO_VIDEO, portrait=False)
        text = self._encode_text(prompt) if prompt else None
        return self._super_resolve(codes, text, make_rng(seed))

    def decode_video(self, codes: np.ndarray) -> np.ndarray:
        """Video codes [t, h, w] int (t latent frames) -> frames [1 + 4(t - 1), H, W, 3] uint8."""
        codes = np.asarray(codes)
        if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
            raise ValueError(f"video codes: expected [t, h, w] integers, got {codes.dtype} {codes.shape}")
        (video,) = self.session("video_decoder").run(codes=codes[None])
        return frames_from_model(video[0])

    def upscaled_frames(self, low: np.ndarray, high: np.ndarray) -> np.ndarray:
        """The clip's codes [t, h, w] and the SR stages' codes of it [t, 2^s h, 2^s w] -> frames
        [1 + 4(t - 1), 2^s H, 2^s W, 3] uint8: both decoded and fused where the bundle has an
        sr_fusion graph (vp.models.sr_fusion), else the SR codes decoded alone (as in the paper)."""
        low, high = np.asarray(low), np.asarray(high)
        for name, codes in (("low", low), ("high", high)):
            if codes.ndim != 3 or not np.issubdtype(codes.dtype, np.integer):
                raise ValueError(f"{name} video codes: expected [t, h, w] integers, got {codes.dtype} {codes.shape}")
        s = high.shape[1] // low.shape[1]
        if s < 2 or high.shape != (low.shape[0], s * low.shape[1], s * low.shape[2]):
            raise ValueError(f"high video codes {high.shape} are not an SR grid of the low codes {low.shape} "
                             "(the same latent frames, an integer multiple >= 2 of their height and width)")
        (video,) = self.session("video_decoder").run(codes=high[None])
        if self.bundle.fuses_superres:
            if "sr_fusion" not in self.bundle.manifest.components:
                raise ValueError(f"bundle {self.bundle.path}: its preset fuses the super-resolution output, but "
                                 "the bundle has no sr_fusion graph; export it with the others (vp-export)")
            (decoded,) = self.session("video_decoder").run(codes=low[None])
            (video,) = self.session("sr_fusion").run(low=decoded, high=video)
        return frames_from_model(video[0])

    @property
    def kv_block_bytes(self) -> int:
        """Bytes of one KV block (block_size tokens of every layer's K and V)."""
        llm = self.bundle.manifest.components["llm"]
        layout = KVPoolLayout.from_contract(llm.contract)
        return layout.block_elements * (2 if self.backend.float_type("llm") == "fp16" else 4)

    @property
    def kv_pool_bytes(self) -> int:
        """Bytes of the KV pool as it stands (0 before the first generation; it grows to the
        largest request's need)."""
        return self._kv.pool_bytes

    def _encode_text(self, prompt: str) -> tuple[np.ndarray, np.ndarray]:
        """The text encoder's embeddings [1, L, width] and mask [1, L] of `prompt`."""
        tokens = self.bundle.tokenizer.tokenize([prompt])
        (embeddings,) = self.session("text_encoder").run(text_ids=tokens.ids, text_mask=tokens.mask)
        return embeddings, tokens.mask

    @dataclass
    class _Run:
        layout: SequenceLayout
        branches: list[Branch]
        sampling: SamplingConfig
        rngs: list[np.random.Generator]
        num_samples: int
        sr: bool
        text: tuple[np.ndarray, np.ndarray] | None  # embeddings [1, L, width], mask [1, L]
        timings: dict[str, float]
        loop: LoopTimings
        start: float
        id: int = 0
        kv_stats: KVStats | None = None  # the KV manager's statistics when the run's sequences were freed

    def _prepare(self, task, prompt, image, video, audio, mask, seed, num_samples, with_audio, portrait, sr,
                 sampling, sampling_overrides) -> Pipeline._Run:
        start = time.perf_counter()
        task = check_task(task)
        prompt = check_prompt(task, prompt)
        seed = check_count("seed", seed, 0, MAX_SEED)
        num_samples = check_count("num_samples", num_samples, 1, MAX_SEED - seed)
        check_media(task, image=image, video=video, audio=audio, mask=mask)
        b = self.bundle
        sampling = _sampling(sampling or b.sampling.for_task(task), sampling_overrides)
        if with_audio is None:
            with_audio = task in {Task.TEXT_TO_VIDEO, Task.UNCONDITIONAL}
        if sr:
            self._check_superres(task, portrait)
        timings: dict[str, float] = {}
        text = None
        if prompt and task in _TEXT_TASKS:
            tick = time.perf_counter()
            text = self._encode_text(prompt)
            timings["text_encoder"] = _ms(tick)
        tick = time.perf_counter()
        video_codes, audio_codes = self._conditioning(task, image, video, audio, mask)
        if video_codes is not None or audio_codes is not None:
            timings["conditioning"] = _ms(tick)
        builder = b.layouts()
        text_len = 0 if text is None else int(text[1].sum())
        inputs = dict(video=video_codes, audio=audio_codes, with_audio=with_audio, portrait=portrait)
        layout = builder.build(task, text_len=text_len, **inputs)
        branches = [Branch(layout, None if text is None else text[0][0])]
        if sampling.guided and text_len:
            branches.append(Branch(builder.build(task, text_len=0, **inputs), None))
        self._check_size([br.layout for br in branches], num_samples)
        return Pipeline._Run(layout=layout, branches=branches, sampling=sampling,
                             rngs=[make_rng(seed + i) for i in range(num_samples)], num_samples=num_samples,
                             sr=sr, text=text, timings=timings, loop=LoopTimings(), start=start,
                             id=next(self._runs))

    def _check_size(self, layouts: list[SequenceLayout], num_samples: int) -> None:
        """Refuse, before any work, a request whose KV pool exceeds the engine profile's num_blocks
        or half of this machine's memory; the message says what it would need."""
        blocks = TokenGenerator.blocks_needed(layouts, num_samples, self.block_size)
        llm = self.bundle.manifest.components["llm"]
        block_bytes = self.kv_block_bytes
        limit = llm.contract.profile(DECODE).dims["num_blocks"][2]  # the pool a decode call reads
        memory = _physical_memory()
        need = f"{num_samples} sample(s) need {blocks} KV blocks ({blocks * block_bytes / 1e9:.2f} GB)"
        if blocks > limit:
            per_sample = max(1, blocks // num_samples)
            raise ValueError(f"{need}; the LLM's engine profile holds {limit} blocks (about "
                             f"{max(1, limit // per_sample)} samples): lower num_samples (--samples)")
        if memory and blocks * block_bytes > memory / 2:
            raise ValueError(f"{need}, more than half of this machine's {memory / 1e9:.1f} GB: lower num_samples")

    def _check_superres(self, task: Task, portrait: bool) -> None:
        grid = self.bundle.geometry.portrait_grid if portrait else self.bundle.geometry.video_grid
        check_superres(self._superres, task, grid, f"bundle {self.bundle.path}")

    def _conditioning(self, task: Task, image, video, audio, mask):
        video, wave = prepare_media(task, self.bundle.media, image=image, video=video, audio=audio, mask=mask)
        video_codes = audio_codes = None
        if video is not None:
            _check_video(video, self.bundle)
            (codes,) = self.session("video_encoder").run(video=video_to_model(video))
            video_codes = codes[0]
        if wave is not None:
            hop = math.prod(self.bundle.manifest.preset["audio_tokenizer"]["strides"])
            if len(wave) < hop:
                raise ValueError(f"audio must hold at least {hop} samples (one frame), got {len(wave)}")
            (codes,) = self.session("audio_encoder").run(wave=wave[None, :len(wave) // hop * hop])
            audio_codes = codes[0]
        return video_codes, audio_codes

    def _token_stream(self, run: Pipeline._Run) -> Iterator[np.ndarray]:
        """The run's output ids, one position at a time; each step holds the pipeline's lock."""
        layouts = [branch.layout for branch in run.branches]
        blocks = TokenGenerator.blocks_needed(layouts, run.num_samples, self.block_size)
        llm, manager = self._kv.reserve(blocks)
        generator, holder = TokenGenerator(llm, manager, self.d_model, *self._batches, self.bundle.vocab), threading.get_ident()
        steps = generator.generate(run.branches, run.num_samples, run.sampling, run.rngs, run.loop,
                                   time.perf_counter, run=run.id)
        try:
            while True:
                with self._lock:
                    ids = next(steps, None)
                if ids is None:
                    return
                yield ids
        finally:
            with self._lock:
                steps.close()
                run.kv_stats = generator.kv_stats()
            self._kv.release(blocks, holder)

    def _tokens(self, run: Pipeline._Run, on_token) -> np.ndarray:
        total = run.layout.output_len
        out = np.zeros((run.num_samples, total), np.int64)
        for position, ids in enumerate(self._token_stream(run)):
            out[:, position] = ids
            if on_token:
                on_token(position + 1, total)
        return out

    def _finish(self, run: Pipeline._Run, tokens: np.ndarray) -> GenerationResult:
        b = self.bundle
        timings = run.timings
        timings["llm_prefill"] = run.loop.prefill_ms
        timings["llm_decode"] = run.loop.decode_ms
        samples = []
        for i in range(run.num_samples):
            vcodes, acodes = run.layout.split_output(tokens[i], b.vocab)
            high = None
            if run.sr and vcodes is not None:
                tick = time.perf_counter()
                high = self._super_resolve(vcodes, run.text, run.rngs[i])
                timings["superres"] = timings.get("superres", 0.0) + _ms(tick)
            tick = time.perf_counter()
            if vcodes is None:
                frames = np.zeros((0, *b.frame_size, 3), np.uint8)
            else:
                frames = self.decode_video(vcodes) if high is None else self.upscaled_frames(vcodes, high)
                timings["video_decoder"] = timings.get("video_decoder", 0.0) + _ms(tick)
            tick = time.perf_counter()
            wave = np.zeros(0, np.float32)
            if acodes is not None:
                (decoded,) = self.session("audio_decoder").run(audio_codes=acodes[None])
                wave = fit_audio(decoded[0], b.media.audio_samples)
                timings["audio_decoder"] = timings.get("audio_decoder", 0.0) + _ms(tick)
            samples.append(Sample(tokens=tokens[i], frames=frames, audio=wave))
        timings["total"] = _ms(run.start)
        timings["decode_steps"] = run.loop.decode_steps
        return GenerationResult(layout=run.layout, samples=samples, sample_rate=b.media.sample_rate,
                                fps=b.media.fps, timings=timings, kv_stats=run.kv_stats, loop=run.loop)

    def _super_resolve(self, codes: np.ndarray, text, rng: np.random.Generator) -> np.ndarray:
        """Low-res codes [t, h, w] -> [t, 2^s h, 2^s w]; CFG branches batched in one call per step."""

        def run_stage(index, tokens, low_res, text, text_mask):
            session = self.session(self.bundle.superres_stages[index])
            return session.run(tokens=tokens, low_res=low_res, text=text, text_mask=text_mask)[0]

        return super_resolve(codes, self._superres, text, rng, run_stage)


_GENERATE_DEFAULTS = dict(task=Task.TEXT_TO_VIDEO, prompt="", image=None, video=None, audio=None, mask=None, seed=0,
                          num_samples=1, with_audio=None, portrait=False, sr=False, sampling=None,
                          sampling_overrides={})


def _ms(start: float) -> float:
    return (time.perf_counter() - start) * 1e3


def _check_video(frames: np.ndarray, bundle: Bundle) -> None:
    """Frames [T, H, W, 3] must be 1 + 4k of the bundle's frame size (or portrait size)."""
    step = 2 ** bundle.manifest.preset["video_tokenizer"]["temporal_downsamples"]
    if (len(frames) - 1) % step:
        raise ValueError(f"video: expected 1 + {step}k frames (1, {1 + step}, {1 + 2 * step}, ...), got {len(frames)}")
    portrait = bundle.manifest.clip["portrait"]
    sizes = [tuple(bundle.frame_size)] + ([tuple(portrait)] if portrait else [])
    if tuple(frames.shape[1:3]) not in sizes:
        raise ValueError(f"video: frames of {frames.shape[1]}x{frames.shape[2]} (H x W); this bundle takes "
                         f"{' or '.join(f'{h}x{w}' for h, w in sizes)} (vp.runtime.media.read_* resize for you)")


def _sampling(base: SamplingConfig, overrides: dict) -> SamplingConfig:
    """base with keyword overrides (temperature, top_k, top_p, cfg_scale); ValueError naming unknown ones."""
    known = {f.name for f in dataclasses.fields(SamplingConfig)}
    unknown = sorted(set(overrides) - known)
    if unknown:
        raise ValueError(f"unknown argument(s) {unknown}; sampling overrides: {', '.join(sorted(known))}")
    return dataclasses.replace(base, **overrides)


def _physical_memory() -> int | None:
    """Bytes of physical memory (POSIX), None where unknown."""
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    except (AttributeError, ValueError, OSError):
        return None
