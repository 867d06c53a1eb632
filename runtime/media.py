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


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


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
        os.chmod(tmp, 0o666 & ~_umask())  # mkstemp makes 0600; a written file gets the usual mode
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
        video.thread_count = 1  # x264's threads split the rate control: one thread makes the bytes reproducible
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


def write_wav(path: str | Path, audio: np.ndarray, sample_rate: int) -> Path:
    """Write mono audio [N] float in [-1, 1] as 16-bit PCM .wav."""
    import wave

    audio = np.asarray(audio)
    if audio.ndim != 1 or not np.issubdtype(audio.dtype, np.floating) or len(audio) == 0:
        raise ValueError(f"audio: expected [N] float samples with N >= 1, got {audio.dtype} {audio.shape}")
    if sample_rate <= 0:
        raise ValueError(f"sample_rate must be positive, got {sample_rate}")
    pcm = np.round(np.clip(audio, -1, 1) * 32767).astype("<i2")
    path = Path(path)
    with atomic_path(path, ".wav") as tmp, wave.open(str(tmp), "wb") as f:
        f.setnchannels(1)
        f.setsampwidth(2)
        f.setframerate(sample_rate)
        f.writeframes(pcm.tobytes())
    return path


def write_png(path: str | Path, frame: np.ndarray) -> Path:
    """Write one frame [H, W, 3] uint8 as .png."""
    import av

    frame = np.asarray(frame)
    if frame.dtype != np.uint8 or frame.ndim != 3 or frame.shape[-1] != 3:
        raise ValueError(f"frame: expected [H, W, 3] uint8, got {frame.dtype} {frame.shape}")
    path = Path(path)
    with atomic_path(path, ".png") as tmp, av.open(str(tmp), "w", format="image2") as container:
        stream = container.add_stream("png", rate=1)
        stream.width, stream.height, stream.pix_fmt = frame.shape[1], frame.shape[0], "rgb24"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")))
        container.mux(stream.encode())
    return path


# Reading. The rule for pictures: scale to cover the bundle's frame size (keeping
# the aspect ratio), then crop the centre. Video is sampled at the bundle's fps
# (the last frame shown at each 1/fps tick) and cut to 1 + 4k frames. Audio is
# mixed to mono and resampled to the bundle's rate.

def _open(path: str | Path):
    import av

    path = Path(path)
    if not path.is_file():
        raise ValueError(f"{path}: no such file")
    try:
        return av.open(str(path))
    except Exception as error:  # PyAV raises a family of FFmpeg errors
        raise ValueError(f"{path}: cannot read it as media ({error.__class__.__name__}: {error})") from None


def _fit(frame, size: tuple[int, int]) -> np.ndarray:
    """An av.VideoFrame scaled to cover size (H, W) and centre-cropped -> [H, W, 3] uint8."""
    height, width = size
    scale = max(height / frame.height, width / frame.width)
    h, w = max(height, round(frame.height * scale)), max(width, round(frame.width * scale))
    rgb = frame.reformat(width=w, height=h, format="rgb24").to_ndarray()
    top, left = (h - height) // 2, (w - width) // 2
    return np.ascontiguousarray(rgb[top:top + height, left:left + width])


def read_image(path: str | Path, size: tuple[int, int]) -> np.ndarray:
    """An image file (or a video's first frame) -> [H, W, 3] uint8 of `size` (H, W)."""
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no picture")
        try:
            frame = next(container.decode(video=0))
        except StopIteration:
            raise ValueError(f"{path}: holds no frame") from None
        except Exception as error:
            raise ValueError(f"{path}: cannot decode ({error})") from None
        return _fit(frame, size)


def read_video(path: str | Path, size: tuple[int, int], fps: int, max_frames: int | None = None,
               temporal_factor: int = 4) -> np.ndarray:
    """A video file -> [T, H, W, 3] uint8 sampled at `fps`, T = 1 + temporal_factor * k <= max_frames."""
    with _open(path) as container:
        if not container.streams.video:
            raise ValueError(f"{path}: has no video stream")
        stream = container.streams.video[0]
        picked: list[np.ndarray] = []
        tick = 0
        try:
            for frame in container.decode(stream):
                t = float(frame.pts * stream.time_base) if frame.pts is not None else tick / fps
                while t >= tick / fps - 1e-6 and (max_frames is None or len(picked) < max_frames):
                    # this frame is the one showing at this tick unless the next one starts before it
                    picked.append(_fit(frame, size))
                    tick += 1
                    if t < tick / fps:
                        break
                if max_frames is not None and len(picked) >= max_frames:
                    break
        except Exception as error:
            raise ValueError(f"{path}: cannot decode ({error})") from None
    if not picked:
        raise ValueError(f"{path}: holds no frame")
    keep = 1 + (len(picked) - 1) // temporal_factor * temporal_factor
    return np.stack(picked[:keep])


def read_audio(path: str | Path, sample_rate: int, max_seconds: float | None = None) -> np.ndarray:
    """An audio (or video) file's first audio stream -> [N] float32 mono at `sample_rate`."""
    import av

    with _open(path) as container:
        if not container.streams.audio:
            raise ValueError(f"{path}: has no audio stream")
        resampler = av.AudioResampler(format="flt", layout="mono", rate=sample_rate)
        chunks = []
        try:
            for frame in container.decode(audio=0):
                chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(frame)]
            chunks += [f.to_ndarray().reshape(-1) for f in resampler.resample(None)]
        except Exception as error:
            raise ValueError(f"{path}: cannot decode ({error})") from None
    wave = np.concatenate(chunks).astype(np.float32) if chunks else np.zeros(0, np.float32)
    if max_seconds is not None:
        wave = wave[:round(max_seconds * sample_rate)]
    if len(wave) == 0:
        raise ValueError(f"{path}: holds no audio samples")
    return wave
