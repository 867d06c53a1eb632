"""A generation whose media are files: what `vp generate` and `vp serve` share.

FileRequest names the input files (image, video, audio, mask or a mask box)
and the output file; `check()` finds bad flags, missing files and unwritable
outputs before anything is loaded; `run_request` reads the inputs at the
bundle's size, generates, and writes every sample (samples 2.. get -1, -2, ...
before the suffix): .mp4 (H.264 + AAC), .png (t2i) or .wav (v2a).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from vp.runtime import media
from vp.runtime.request import check_media
from vp.runtime.result import GenerationResult
from vp.runtime.vocab import Task


@dataclass(frozen=True, kw_only=True)
class FileRequest:
    """box: (x0, y0, x1, y1) pixels (inpaint fills it, outpaint keeps it); seconds: a long video's
    length (task long); sampling: overrides (temperature, top_k, top_p, cfg_scale)."""

    task: str = "t2v"
    prompt: str = ""
    output: Path = Path("vp.mp4")
    image: Path | None = None
    video: Path | None = None
    audio: Path | None = None
    mask: Path | None = None
    box: tuple[int, int, int, int] | None = None
    seed: int = 0
    samples: int = 1
    seconds: float | None = None
    portrait: bool = False
    sr: bool = False
    sampling: dict = field(default_factory=dict)

    def check(self) -> None:
        """ValueError for what can be found wrong before loading the bundle."""
        check_output(Path(self.output), self.task)
        _check_inputs(self.task, image=self.image, video=self.video, audio=self.audio, mask=self.mask,
                      box=self.box, seconds=self.seconds)


def run_request(pipeline, request: FileRequest, on_token: Callable[[int, int], None] | None = None
                ) -> tuple[GenerationResult, list[Path]]:
    """Read the request's inputs, generate with `pipeline`, write the outputs; (result, paths)."""
    r = request
    inputs = read_inputs(pipeline, r)
    common = dict(prompt=r.prompt, seed=r.seed, sr=r.sr, portrait=r.portrait, on_token=on_token, **r.sampling)
    if r.task == "long" and r.seconds is not None:
        result = pipeline.long_video(seconds=r.seconds, video=inputs.get("video"), **common)
    else:
        result = pipeline.generate(task=r.task, num_samples=r.samples, **inputs, **common)
    paths = [_write(Path(r.output), i, s, result, inputs) for i, s in enumerate(result.samples)]
    return result, paths


def read_inputs(pipeline, request: FileRequest) -> dict[str, np.ndarray]:
    """The request's media files as the arrays generate() takes, at the bundle's (or portrait) size."""
    r, b = request, pipeline.bundle
    if r.portrait and not b.manifest.clip["portrait"]:
        raise ValueError(f"bundle {b.path} has no portrait layout")
    size = tuple(b.manifest.clip["portrait"]) if r.portrait else b.frame_size
    inputs = {}
    if r.mask or r.box:  # first: a bad box is found before any file is decoded
        inputs["mask"] = _mask(r.mask, r.box, size, r.task)
    if r.image:
        inputs["image"] = media.read_image(r.image, size)
    if r.video:
        frames = b.media.frames_read(r.task)
        # a continuation keeps the video's end: read every frame, and let the pipeline cut 1 + 4k from the end
        inputs["video"] = media.read_video(r.video, size, b.media.fps, max_frames=frames,
                                           temporal_factor=b.media.temporal_factor if frames else 1)
    if r.audio or (r.video and r.task in {"a2v", "av-continue"}):
        inputs["audio"] = media.read_audio(r.audio or r.video, b.media.sample_rate)
    return inputs


def check_output(output: Path, task: str) -> None:
    suffixes = {".mp4"} | ({".png"} if task == "t2i" else set()) | ({".wav"} if task == "v2a" else set())
    if output.suffix.lower() not in suffixes:
        raise ValueError(f"output {output}: task {task} writes {' or '.join(sorted(suffixes))}")
    check_writable(output)


def check_writable(output: Path) -> None:
    """An output file can be written: its folder exists and may be written (checked before the work)."""
    if not output.parent.is_dir():
        raise ValueError(f"output folder {output.parent} does not exist")
    if not os.access(output.parent, os.W_OK) or (output.exists() and not os.access(output, os.W_OK)):
        raise ValueError(f"output {output} cannot be written (permission denied)")


def _check_inputs(task: str, *, image, video, audio, mask, box, seconds) -> None:
    """The files and flags the task uses, checked before anything is read or generated."""
    if seconds is not None and task != "long":
        raise ValueError("--seconds sets the length of a long video: use it with --task long")
    if mask and box:
        raise ValueError("give --mask or --box, not both")
    for flag, path in (("--image", image), ("--video", video), ("--audio", audio), ("--mask", mask)):
        if path is not None and path.is_dir():
            raise ValueError(f"{flag} {path} is a folder; give a file")
        if path is not None and not path.exists():
            raise ValueError(f"{flag} {path} does not exist")
    sound = audio or (video if task in {"a2v", "av-continue"} else None)  # --audio defaults to --video's
    pictures = video if task != "a2v" else None
    if task == "long" and seconds is not None and video is None:
        return  # a long video from text: a t2v clip, then continuations
    check_media(Task(task), image=image, video=pictures, audio=sound, mask=mask or box)


def _mask(path, box, size, task) -> np.ndarray:
    """[H, W] bool, True = pixels to fill."""
    if path:
        return media.read_image(path, size).mean(-1) > 127
    x0, y0, x1, y1 = box
    height, width = size
    if not (0 <= x0 < x1 <= width and 0 <= y0 < y1 <= height):
        raise ValueError(f"--box {x0},{y0},{x1},{y1}: expected 0 <= x0 < x1 <= {width} and 0 <= y0 < y1 <= {height} "
                         f"(pixels of the {width}x{height} frame)")
    inside = np.zeros(size, bool)
    inside[y0:y1, x0:x1] = True
    return inside if task != "outpaint" else ~inside


def _write(output: Path, index: int, sample, result, inputs) -> Path:
    path = output if index == 0 else output.with_name(f"{output.stem}-{index}{output.suffix}")
    suffix = path.suffix.lower()
    if suffix == ".png":
        return media.write_png(path, sample.frames[0])
    if suffix == ".wav":
        return media.write_wav(path, sample.audio, result.sample_rate)
    frames = sample.frames if len(sample.frames) else inputs["video"]  # v2a: the given video with its new audio
    return media.write_mp4(path, frames, result.fps, sample.audio if len(sample.audio) else None, result.sample_rate)
