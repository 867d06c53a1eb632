"""`vp soak`: many generations of mixed tasks in one process, watching what they leave behind.

A long-lived app (a server, a batch job) runs the same Pipeline for hours; a
leak that costs 1 MB per clip or a file descriptor per mp4 ends it. The soak
cycles through SOAK_TASKS (every task, a stream closed early, and the mp4 /
PNG / WAV files each writes, read back by PyAV), then reports:

- resident memory after the warm-up and at the end, and the growth between;
- open file descriptors and threads after the warm-up and at the end;
- files left in the output folder besides the outputs themselves (a write's
  temporary file that was never renamed or removed), and new entries in the
  system's temporary folder.

The warm-up lets the KV pool reach its largest size (it grows to the largest
request) and every session open; growth is measured after it.
"""

from __future__ import annotations

import itertools
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from vp.runtime import media
from vp.runtime.pipeline import Pipeline
from vp.runtime.process_memory import rss_mb

# One round of the soak, in order: every task the runtime serves, and an early-closed stream.
SOAK_TASKS = ("t2v", "t2i", "i2v", "continue", "inpaint", "outpaint", "v2a", "a2v", "av-continue", "stylize",
              "uncond", "stream")
_PROMPTS = ("a red circle moving left", "a big green square heading up", "one white ball that moves right")


@dataclass(frozen=True, kw_only=True)
class SoakConfig:
    """generations: measured after `warmup` more; tasks cycle through SOAK_TASKS. The report's
    `tasks` counts the generations of each task, warm-up included."""

    bundle: str
    generations: int = 200
    warmup: int = 24
    backend: str = "auto"
    seed: int = 0


def open_fds() -> int | None:
    """File descriptors this process holds open (Linux and macOS), None where unknown."""
    for folder in ("/proc/self/fd", "/dev/fd"):
        try:
            return len(os.listdir(folder)) - 1  # the listing's own descriptor
        except OSError:
            continue
    return None


@dataclass
class _Probe:
    rss_mb: float | None
    fds: int | None
    threads: int
    temp_entries: frozenset[str]

    @classmethod
    def now(cls) -> _Probe:
        return cls(rss_mb=rss_mb(), fds=open_fds(), threads=threading.active_count(),
                   temp_entries=frozenset(os.listdir(tempfile.gettempdir())))


def run_soak(config: SoakConfig, out_dir: Path, progress: Callable[[int, int, str], None] = lambda i, n, t: None
             ) -> dict:
    """Run config.warmup + config.generations generations, writing their files into out_dir (an
    existing folder; files already there are left alone and not judged); returns the report."""
    if config.generations < 1 or config.warmup < 0:
        raise ValueError(f"need generations >= 1 and warmup >= 0, got {config.generations} and {config.warmup}")
    out_dir = Path(out_dir)
    if not out_dir.is_dir():
        raise ValueError(f"soak output folder {out_dir} does not exist")
    before = set(os.listdir(out_dir))
    total = config.warmup + config.generations
    start = time.perf_counter()
    counts = dict.fromkeys(SOAK_TASKS, 0)
    rss: list[float] = []
    with Pipeline.load(config.bundle, backend=config.backend) as pipeline:
        round_ = _Round(pipeline, out_dir, config.seed)
        first = None
        for i, task in zip(range(total), itertools.cycle(SOAK_TASKS)):
            progress(i + 1, total, task)
            if i == config.warmup:
                first = _Probe.now()
            round_.run(task, seed=config.seed + i)
            counts[task] += 1
            rss.append(rss_mb() or float("nan"))
        last = _Probe.now()  # the pipeline still open: what a long-lived app holds
    first = first or last
    written = set(os.listdir(out_dir)) - before
    growth = (last.rss_mb - first.rss_mb) / first.rss_mb if first.rss_mb and last.rss_mb else None
    return {
        "bundle": config.bundle,
        "generations": config.generations,
        "warmup": config.warmup,
        "tasks": counts,
        "seconds": time.perf_counter() - start,
        "rss_mb": {"after_warmup": first.rss_mb, "end": last.rss_mb, "growth_share": growth,
                   "max_measured": max(rss[config.warmup:]) if len(rss) > config.warmup else None},
        "fds": {"after_warmup": first.fds, "end": last.fds},
        "threads": {"after_warmup": first.threads, "end": last.threads},
        "leftover_files": sorted(written - set(_Round.OUTPUTS)),
        "new_temp_entries": sorted(last.temp_entries - first.temp_entries),
    }


class _Round:
    """One generation of each soak task; media inputs come from the soak's own first clip."""

    OUTPUTS = ("soak.mp4", "soak.png", "soak.wav")

    def __init__(self, pipeline: Pipeline, out_dir: Path, seed: int):
        self.p = pipeline
        self.out = out_dir
        b = pipeline.bundle
        clip = pipeline.generate(task="t2v", prompt=_PROMPTS[0], seed=seed, with_audio=True)
        self.video, self.audio = clip.frames, clip.audio
        self.fps, self.rate = b.media.fps, b.media.sample_rate
        height, width = b.frame_size
        self.box = np.zeros((height, width), bool)
        self.box[height // 4:3 * height // 4, width // 4:3 * width // 4] = True

    def run(self, task: str, seed: int) -> None:
        p, prompt = self.p, _PROMPTS[seed % len(_PROMPTS)]
        if task == "stream":
            chunks = p.stream(task="t2v", prompt=prompt, seed=seed)
            next(chunks)
            chunks.close()  # an app that stops reading: its KV blocks must come back
            return
        media_in = {"i2v": dict(image=self.video[0]), "continue": dict(video=self.video),
                    "inpaint": dict(video=self.video, mask=self.box), "outpaint": dict(video=self.video, mask=~self.box),
                    "v2a": dict(video=self.video), "a2v": dict(audio=self.audio),
                    "av-continue": dict(video=self.video, audio=self.audio), "stylize": dict(video=self.video)}
        text = "" if task in {"uncond", "v2a"} else prompt
        result = p.generate(task=task, prompt=text, seed=seed, **media_in.get(task, {}))
        size = p.bundle.frame_size
        if task == "t2i":
            media.read_image(media.write_png(self.out / "soak.png", result.frames[0]), size)
        elif task == "v2a":
            media.read_audio(media.write_wav(self.out / "soak.wav", result.audio, self.rate), self.rate)
        else:
            path = media.write_mp4(self.out / "soak.mp4", result.frames, self.fps,
                                   result.audio if len(result.audio) else None, self.rate)
            media.read_video(path, size, self.fps)
