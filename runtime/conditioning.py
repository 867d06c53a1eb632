"""What a task's media inputs become before the tokenizers see them (numpy only).

The torch reference and the runtime both call `prepare_media`, then encode the
result with their own tokenizer (torch module or engine), so the two cannot
disagree on which frames and samples condition a task.

Rules (vp's choices where the paper is silent):
- image-to-video: the image is a one-frame video (its codes are one latent frame).
- continuation and audio-video continuation: the last frames of the given
  video, at most a clip less one latent frame (13 of 17: something is left to
  generate) and 1 + 4k of them, so a whole clip or a longer video can be
  continued from its end.
- long video: the last second of the given video (fps + 1 frames = 3 latent
  frames at 8 fps) conditions the next clip.
- inpaint, outpaint, video-to-audio, stylization: the first clip of the given
  video (and of a [T, H, W] mask).
- inpaint / outpaint: pixels where the mask is True are set to mid grey (128)
  before encoding; the mask is [H, W] (every frame) or [T, H, W].
- audio-video continuation: the audio that goes with the kept frames (from
  the first kept frame's time to the last's end) conditions the output audio.
- audio-to-video: the first clip's worth of audio.
- stylization: the video is replaced by its structure video (optical flow and
  depth as the paper has it; vp.runtime.structure), so the text, not the
  input's pixels, chooses the look.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from vp.runtime.structure import SilhouetteFlow
from vp.runtime.vocab import Task


_CONTINUATIONS = frozenset({Task.CONTINUATION, Task.AUDIO_VIDEO_CONTINUATION})
_WHOLE_CLIP = frozenset({Task.INPAINT, Task.OUTPAINT, Task.VIDEO_TO_AUDIO, Task.STYLIZATION})


@dataclass(frozen=True, kw_only=True)
class MediaSpec:
    """The clip a bundle generates, as the conditioning rules need it."""

    fps: int
    sample_rate: int
    audio_samples: int  # one clip's audio: 34000 = 2.125 s at 16 kHz
    frames: int  # one clip's frames: 17 = 1 + 4 x 4
    temporal_factor: int = 4  # frames per latent frame after the first

    def frames_read(self, task: Task | str) -> int | None:
        """How many leading frames of an input video `task` can use (None: all of them, since
        continuations condition on the video's end); readers may stop decoding there."""
        task = Task(task)
        return self.frames if task in _WHOLE_CLIP or task is Task.IMAGE_TO_VIDEO else None

    def continuation_frames(self, available: int) -> int:
        """The frames a continuation keeps of `available`: at most a clip less one latent
        frame, 1 + temporal_factor k of them."""
        f = self.temporal_factor
        return 1 + (min(available, self.frames - f) - 1) // f * f


def prepare_media(task: Task, spec: MediaSpec, *, image=None, video=None, audio=None, mask=None,
                  structure_estimator: Callable[[np.ndarray], np.ndarray] | None = None):
    """(video [T, H, W, 3] uint8 or None, wave [N] float32 or None) to encode for `task`.

    structure_estimator: frames -> structure video for stylization (SilhouetteFlow by default).
    """
    if task is Task.IMAGE_TO_VIDEO:
        if image is None:
            raise ValueError("task i2v needs an image [H, W, 3] uint8")
        video = _check_frames("image", np.asarray(image)[None])
    elif video is not None:
        video = _check_frames("video", video)
    start = 0  # the first frame kept of the given video
    if task is Task.LONG_VIDEO and video is not None:
        start = max(len(video) - (spec.fps + 1), 0)
    elif task in _CONTINUATIONS and video is not None and len(video):
        start = len(video) - spec.continuation_frames(len(video))
    end = spec.frames if task in _WHOLE_CLIP else None
    given = 0 if video is None else len(video)
    if video is not None:
        video = video[start:end]
    if task in {Task.INPAINT, Task.OUTPAINT}:
        if video is None or mask is None:
            raise ValueError(f"task {task.value} needs a video and a mask (True = pixels to fill)")
        mask = np.asarray(mask, bool)
        if mask.ndim == 3 and len(mask) == given:
            mask = mask[start:end]
        if mask.shape not in {video.shape[1:3], video.shape[:3]}:
            raise ValueError(f"mask: expected [H, W] or [T, H, W] = {video.shape[:3]}, got {mask.shape}")
        video = np.where(np.broadcast_to(mask[..., None], video.shape), np.uint8(128), video)
    if task is Task.STYLIZATION and video is not None:
        video = _check_frames("structure video", (structure_estimator or SilhouetteFlow())(video))
    wave = None
    if audio is not None:
        wave = np.asarray(audio)
        if wave.ndim != 1 or not np.issubdtype(wave.dtype, np.floating):
            raise ValueError(f"audio: expected [N] float samples, got {wave.dtype} {wave.shape}")
        wave = wave.astype(np.float32)
        if task is Task.AUDIO_VIDEO_CONTINUATION and video is not None:
            wave = wave[round(start / spec.fps * spec.sample_rate):round(given / spec.fps * spec.sample_rate)]
        elif task is Task.AUDIO_TO_VIDEO:
            wave = wave[:spec.audio_samples]
    return video, wave


def _check_frames(name: str, frames) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"{name}: expected [T, H, W, 3] uint8 ([H, W, 3] for an image), "
                         f"got {frames.dtype} {frames.shape}")
    return frames


def video_to_model(frames: np.ndarray) -> np.ndarray:
    """[T, H, W, 3] uint8 -> [1, 3, T, H, W] float32 in [-1, 1] (the video encoder's input)."""
    return (frames.transpose(3, 0, 1, 2)[None].astype(np.float32) / np.float32(127.5)) - np.float32(1.0)


def frames_from_model(video: np.ndarray) -> np.ndarray:
    """[3, T, H, W] float in [-1, 1] (the video decoder's output) -> [T, H, W, 3] uint8."""
    video = np.clip(np.asarray(video, np.float32), -1, 1)
    return np.round((video + 1) * np.float32(127.5)).astype(np.uint8).transpose(1, 2, 3, 0)


def fit_audio(wave: np.ndarray, num_samples: int) -> np.ndarray:
    """[N] -> [num_samples]: trimmed, or zero-padded after the last decoded frame."""
    wave = np.asarray(wave, np.float32)[:num_samples]
    return np.pad(wave, (0, num_samples - len(wave)))
