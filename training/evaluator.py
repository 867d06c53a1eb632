"""The demo evaluator: generate held-out cases, read them back from mp4, measure, score.

Held-out cases: world seeds from HELD_OUT_SEED on (clips never trained on)
captioned with the HELD_OUT_TEMPLATES phrasings (never trained on). Every
generated clip is written as an mp4 (H.264 + AAC) and read back with the
runtime's media reader before it is measured (vp.training.measure: plain
image and audio analysis), so the scores are those of the files a user gets
(the super-resolution row compares frames before the codec, like for like).

Rows (targets from the demo-model issue):

    t2v colour / direction / shape / pitch   the prompt's attributes in the generated clip
    i2v first frame PSNR, colour kept        the input image stays the first frame
    v2a pitch                                the tone of the input video's shape
    stylize trajectory + colour              the input's centroid track (within 3 px), the prompt's colour
    superres beats bicubic                   the input clip upscaled to 128x128 is closer (PSNR) to the
                                             world rendered at 128x128 than a bicubic upscale of the
                                             clip's 64x64 tokenizer decode

Generation runs through a `Generator`: the torch reference (ReferenceGenerator)
or a bundle (BundleGenerator, ONNX Runtime or TensorRT), with the same seeds,
so the two can be compared row by row.
"""

from __future__ import annotations

import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Protocol

import numpy as np

from vp.runtime.media import read_audio, read_video, write_mp4
from vp.training.captions import HELD_OUT_TEMPLATES, caption
from vp.training.measure import measure, psnr
from vp.training.world import COLOURS, HELD_OUT_SEED, World, WorldConfig

TARGETS = {
    "t2v colour": 0.85, "t2v direction": 0.75, "t2v shape": 0.60, "t2v pitch": 0.75,
    "i2v first-frame PSNR (dB)": 25.0, "i2v colour kept": 0.90, "v2a pitch": 0.75,
    "stylize trajectory and colour": 0.80, "superres beats bicubic": 0.80,
}
TRACK_TOLERANCE = 3.0  # pixels: mean distance of the stylized clip's centroid track from the input's


@dataclass
class Output:
    """frames [T, H, W, 3] uint8; audio [N] float32 (may be empty); sample_rate Hz; fps."""

    frames: np.ndarray
    audio: np.ndarray
    sample_rate: int
    fps: int


class Generator(Protocol):
    world: WorldConfig  # the clip geometry and sample rate it generates

    def __call__(self, **kwargs) -> Output: ...

    def reconstruct(self, video: np.ndarray) -> np.ndarray: ...  # the clip through the video tokenizer

    def upscale(self, video: np.ndarray, prompt: str, seed: int) -> np.ndarray: ...  # through super-resolution


class ReferenceGenerator:
    """The torch reference (vp.models.reference.generate) on loaded models."""

    def __init__(self, models):
        self.models = models
        c = models.preset.clip
        self.world = WorldConfig(frames=c.frames, height=c.height, width=c.width, fps=c.fps,
                                 sample_rate=models.preset.audio_tokenizer.sample_rate)

    def __call__(self, **kwargs) -> Output:
        from vp.models.reference import generate

        r = generate(self.models, **kwargs)
        return Output(r.frames, r.audio, r.sample_rate, self.models.preset.clip.fps)

    def reconstruct(self, video: np.ndarray) -> np.ndarray:
        from vp.models.reference import reconstruct

        return reconstruct(self.models, video)

    def upscale(self, video: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        from vp.models.reference import upscale

        return upscale(self.models, video, prompt=prompt, seed=seed)


class BundleGenerator:
    """A bundle through vp.runtime.pipeline.Pipeline (first sample)."""

    def __init__(self, pipeline):
        self.pipeline = pipeline
        c = pipeline.bundle.manifest.clip
        self.world = WorldConfig(frames=c["frames"], height=c["height"], width=c["width"], fps=c["fps"],
                                 sample_rate=pipeline.bundle.media.sample_rate)

    def __call__(self, **kwargs) -> Output:
        r = self.pipeline.generate(**kwargs)
        return Output(r.samples[0].frames, r.samples[0].audio, r.sample_rate, r.fps)

    def reconstruct(self, video: np.ndarray) -> np.ndarray:
        return self.pipeline.reconstruct(video)

    def upscale(self, video: np.ndarray, prompt: str, seed: int) -> np.ndarray:
        return self.pipeline.upscale(video, prompt=prompt, seed=seed)


@dataclass
class Report:
    """scores: row -> measured value (a share, or dB); counts: row -> number of cases; cases: row ->
    the per-case values (1.0 / 0.0 for a share) of cases first, first + 1, ..."""

    scores: dict[str, float] = field(default_factory=dict)
    counts: dict[str, int] = field(default_factory=dict)
    cases: dict[str, list[float]] = field(default_factory=dict)
    first: int = 0

    def add(self, row: str, values: list[float]) -> None:
        self.scores[row] = float(np.mean(values)) if values else float("nan")
        self.counts[row] = len(values)
        self.cases[row] = [float(v) for v in values]

    def to_dict(self) -> dict:
        """JSON-ready per-case record (`vp-eval --per-case`), which `from_dict` reads back."""
        return {"first": self.first, "cases": self.cases}

    @classmethod
    def from_dict(cls, body: dict) -> Report:
        report = cls(first=int(body["first"]))
        for row, values in body["cases"].items():
            report.add(row, values)
        return report

    def paired(self, base: Report) -> str:
        """A markdown table of this report against `base` on the same cases, row by row: both
        scores and, for the share rows, the cases only base got right / only this one got right
        (what a change of arithmetic flips, apart from what the two scores say)."""
        if self.first != base.first:
            raise ValueError(f"the reports start at different cases ({self.first} and {base.first})")
        lines = ["| measure | cases | this | base | lost / won |", "|---|---|---|---|---|"]
        for row in (r for r in self.cases if r in base.cases):
            mine, theirs = self.cases[row], base.cases[row]
            if len(mine) != len(theirs):
                raise ValueError(f"{row}: {len(mine)} cases here, {len(theirs)} in the base")
            if "dB" in row:
                lines.append(f"| {row} | {len(mine)} | {np.mean(mine):.1f} | {np.mean(theirs):.1f} | - |")
                continue
            lost = sum(1 for m, t in zip(mine, theirs) if t and not m)
            won = sum(1 for m, t in zip(mine, theirs) if m and not t)
            lines.append(f"| {row} | {len(mine)} | {np.mean(mine):.0%} | {np.mean(theirs):.0%} | {lost} / {won} |")
        return "\n".join(lines)

    def table(self) -> str:
        lines = ["| measure | cases | measured | target | met |", "|---|---|---|---|---|"]
        for row, value in self.scores.items():
            target = TARGETS.get(row)
            shown = f"{value:.1f}" if "dB" in row else f"{value:.0%}"
            want = "-" if target is None else (f"{target:.1f}" if "dB" in row else f">= {target:.0%}")
            met = "-" if target is None else ("yes" if value >= target else "no")
            lines.append(f"| {row} | {self.counts[row]} | {shown} | {want} | {met} |")
        return "\n".join(lines)


def _round_trip(out: Output, folder: Path, name: str) -> tuple[np.ndarray, np.ndarray]:
    """Write the output as an mp4 and read frames and sound back as a user's player would."""
    path = folder / f"{name}.mp4"
    audio = out.audio if len(out.audio) else None
    write_mp4(path, out.frames, out.fps, audio, out.sample_rate)
    h, w = out.frames.shape[1:3]
    frames = read_video(path, (h, w), out.fps, max_frames=len(out.frames))
    sound = read_audio(path, out.sample_rate) if audio is not None else np.zeros(0, np.float32)
    return frames, sound


TASKS = ("t2v", "i2v", "v2a", "stylize", "superres")


def evaluate(generate: Generator, *, cases: int = 24, first: int = 0, tasks: tuple[str, ...] = TASKS,
             progress: Callable[[str], None] | None = None, **sampling) -> Report:
    """Score `cases` held-out cases of each task, from case `first` on; `sampling` overrides
    (temperature, cfg_scale, ...) go to every generation. Case i uses world seed HELD_OUT_SEED + i
    and generation seed i. The docs' figures are cases 0-47; cases from 48 on are the split on
    which sampling settings are chosen, so the reported cases never tuned them."""
    world = World(generate.world)
    hires = World(generate.world.doubled())
    sr = world.config.sample_rate
    report = Report(first=first)
    rows: dict[str, list[float]] = {}
    with tempfile.TemporaryDirectory(prefix="vp-eval-") as tmp:
        folder = Path(tmp)
        for i in range(first, first + cases):
            clip = world.clip(HELD_OUT_SEED + i)
            a = clip.attributes
            prompt = caption(a, HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)])
            if progress:
                progress(f"case {i + 1 - first}/{cases}: {prompt}")
            if "t2v" in tasks:
                frames, sound = _round_trip(generate(task="t2v", prompt=prompt, seed=i, **sampling), folder, "t2v")
                m = measure(frames, sound, sr)
                rows.setdefault("t2v colour", []).append(m.colour == a.colour)
                rows.setdefault("t2v direction", []).append(m.direction == a.direction)
                rows.setdefault("t2v shape", []).append(m.shape == a.shape)
                rows.setdefault("t2v pitch", []).append(m.pitch_shape == a.shape)
            if "i2v" in tasks:
                out = generate(task="i2v", prompt=prompt, image=clip.frames[0], seed=i, **sampling)
                frames, _ = _round_trip(out, folder, "i2v")
                rows.setdefault("i2v first-frame PSNR (dB)", []).append(min(psnr(frames[0], clip.frames[0]), 99.0))
                rows.setdefault("i2v colour kept", []).append(measure(frames, None, sr).colour == a.colour)
            if "v2a" in tasks:
                sound = generate(task="v2a", video=clip.frames, seed=i, **sampling).audio  # a wav: no codec
                m = measure(clip.frames, sound, sr)
                rows.setdefault("v2a pitch", []).append(m.pitch_shape == a.shape)
            if "stylize" in tasks:
                colour = list(COLOURS)[(list(COLOURS).index(a.colour) + 1 + i % (len(COLOURS) - 1)) % len(COLOURS)]
                restyled = caption(replace(a, colour=colour), HELD_OUT_TEMPLATES[i % len(HELD_OUT_TEMPLATES)])
                out = generate(task="stylize", prompt=restyled, video=clip.frames, seed=i, **sampling)
                frames, _ = _round_trip(out, folder, "stylize")
                m = measure(frames, None, sr)
                distance = np.nanmean(np.linalg.norm(m.track - measure(clip.frames, None, sr).track, axis=1))
                rows.setdefault("stylize trajectory and colour", []).append(
                    bool(distance <= TRACK_TOLERANCE) and m.colour == colour)
            if "superres" in tasks:
                truth = hires.render(a, seed=HELD_OUT_SEED + i).frames
                # frames compared before any codec: an mp4 round trip of one side only would decide the row
                high = generate.upscale(clip.frames, prompt, seed=i)
                baseline = bicubic(generate.reconstruct(clip.frames), truth.shape[1:3])
                rows.setdefault("superres beats bicubic", []).append(psnr(high, truth) > psnr(baseline, truth))
    for row, values in rows.items():
        report.add(row, [float(v) for v in values])
    return report


def bicubic(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """frames [T, H, W, 3] uint8 resized to `size` (H, W) by bicubic interpolation."""
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    y = F.interpolate(x, size=size, mode="bicubic", align_corners=False)
    return y.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()
