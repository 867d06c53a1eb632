"""Media files through PyAV: .mp4 (H.264 yuv420p + AAC).

Files are written to a temporary file beside the target and renamed into
place, so a failed write never leaves a half-written file under the name.
"""

from __future__ import annotations

import os
import tempfile
from contextlib import contextmanager
from fractions import Fraction
from pathlib import Path

import numpy as np


@contextmanager
def atomic_path(path: str | Path, suffix: str):
    """Yield a temporary path in the target's folder; rename it to `path` on success."""
    path = Path(path)
    if not path.parent.is_dir():
        raise ValueError(f"cannot write {path}: folder {path.parent} does not exist")
    fd, tmp = tempfile.mkstemp(suffix=suffix, prefix=f".{path.name}.", dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def write_mp4(
    path: str | Path,
    frames: np.ndarray,
    fps: int,
    audio: np.ndarray | None = None,
    sample_rate: int = 16000,
) -> Path:
    """Write frames [T, H, W, 3] uint8 (H, W even) and optional mono audio [N]
    float in [-1, 1] as H.264 (yuv420p) + AAC. Returns the path."""
    import av

    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3 or len(frames) == 0:
        raise ValueError(f"frames: expected [T, H, W, 3] uint8 with T >= 1, got {frames.dtype} {frames.shape}")
    height, width = frames.shape[1:3]
    if height % 2 or width % 2:
        raise ValueError(f"frames: H.264 yuv420p needs an even height and width, got {height}x{width}")
    path = Path(path)
    with atomic_path(path, ".mp4") as tmp, av.open(str(tmp), "w", format="mp4") as container:
        video = container.add_stream("libx264", rate=Fraction(fps))
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        sound = None
        if audio is not None and len(audio):
            sound = container.add_stream("aac", rate=sample_rate, layout="mono")
        for frame in frames:
            container.mux(video.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(video.encode())
        if sound is not None:
            wave = np.clip(np.asarray(audio, np.float32), -1, 1)[None]  # (1, N) planar mono
            chunk = sound.codec_context.frame_size or 1024
            for start in range(0, wave.shape[1], chunk):
                piece = av.AudioFrame.from_ndarray(np.ascontiguousarray(wave[:, start:start + chunk]),
                                                   format="fltp", layout="mono")
                piece.sample_rate = sample_rate
                piece.pts = start
                container.mux(sound.encode(piece))
            container.mux(sound.encode())
    return path
