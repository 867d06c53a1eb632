"""Plain image and audio analysis of a clip: what the demo evaluator reads back.

numpy only, no learned judge. For frames [T, H, W, 3] uint8 and audio [N]:
- the object: per frame, the pixels that stand out from the background
  (vp.runtime.structure.object_coverage, shared with the stylization prefix);
- colour: the palette colour nearest the median colour of the object's
  pixels over all frames;
- direction: the dominant axis and sign of the centroid's displacement over
  the first DIRECTION_FRAMES frames (the world starts every object at least
  that far from the wall it heads for);
- shape: per frame, the shape whose rendering at the object's area and
  centroid differs least from the object's soft coverage; the most frequent
  over frames;
- pitch: the strongest spectral peak between 100 and 2000 Hz (Hann window,
  parabolic interpolation); the shape whose tone is nearest in log frequency.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vp.runtime.structure import centroids, object_coverage
from vp.training.world import COLOURS, DIRECTIONS, FREE_FRAMES, PITCH_HZ, World, WorldConfig

DIRECTION_FRAMES = FREE_FRAMES
MIN_TRAVEL = 1.5  # pixels over DIRECTION_FRAMES below which the object does not move
# area of each shape at half-extent 1, and its centroid's offset below the box centre (World.coverage)
UNIT_AREA = {"circle": np.pi, "square": 1.7**2, "triangle": 2.0}
CENTROID_DY = {"circle": 0.0, "square": 0.0, "triangle": 1 / 3}


@dataclass(frozen=True)
class Measurement:
    """What a clip shows, or None where it cannot be told (no object, no motion, silence).

    track: [T, 2] float (x, y) centroid per frame, NaN where no object stands out.
    """

    colour: str | None
    direction: str | None
    shape: str | None
    pitch_hz: float | None
    track: np.ndarray

    @property
    def pitch_shape(self) -> str | None:
        """The shape whose tone is nearest the measured pitch."""
        if self.pitch_hz is None:
            return None
        return min(PITCH_HZ, key=lambda s: abs(np.log(PITCH_HZ[s] / self.pitch_hz)))


def measure_video(frames: np.ndarray) -> tuple[str | None, str | None, str | None, np.ndarray]:
    """(colour, direction, shape, track [T, 2]) of frames [T, H, W, 3] uint8."""
    frames = _check_frames(frames)
    world = World(WorldConfig(height=frames.shape[1], width=frames.shape[2]))  # shape templates at this size
    cover = object_coverage(frames)
    masks = cover > 0
    track = centroids(cover)
    votes: dict[str, int] = {}
    for t, c in enumerate(cover):
        if np.count_nonzero(c) < 4:
            track[t] = np.nan
            continue
        shape = _shape(world, c, float(c.sum()), track[t])
        votes[shape] = votes.get(shape, 0) + 1
    if not masks.any():
        return None, None, None, track
    rgb = np.median(frames[masks].astype(np.float32), axis=0)
    colour = min(COLOURS, key=lambda c: float(np.linalg.norm(rgb - np.array(COLOURS[c], np.float32))))
    shape = max(votes, key=votes.get)
    return colour, _direction(track), shape, track


def _shape(world: World, cover: np.ndarray, area: float, centroid: np.ndarray) -> str:
    """The shape whose rendering of the same area and centroid differs least from cover [H, W]."""
    def mismatch(shape: str) -> float:
        r = np.sqrt(area / UNIT_AREA[shape])
        template = world.coverage(shape, r, centroid[0], centroid[1] - CENTROID_DY[shape] * r)
        return float(np.abs(template - cover).sum())
    return min(UNIT_AREA, key=mismatch)


def _direction(track: np.ndarray) -> str | None:
    first = track[:DIRECTION_FRAMES]
    seen = first[~np.isnan(first[:, 0])]
    if len(seen) < 2:
        return None
    move = seen[-1] - seen[0]
    if np.abs(move).max() < MIN_TRAVEL:
        return None
    axis = int(np.argmax(np.abs(move)))
    step = (int(np.sign(move[0])), 0) if axis == 0 else (0, int(np.sign(move[1])))
    return next(name for name, d in DIRECTIONS.items() if d == step)


def pitch(audio: np.ndarray, sample_rate: int) -> float | None:
    """The strongest frequency in [100, 2000] Hz of audio [N], or None for silence."""
    audio = np.asarray(audio, np.float64)
    if audio.ndim != 1 or len(audio) < 64:
        raise ValueError(f"audio: expected [N] samples with N >= 64, got shape {audio.shape}")
    if np.sqrt(np.mean(audio**2)) < 1e-3:
        return None
    spectrum = np.abs(np.fft.rfft(audio * np.hanning(len(audio))))
    freqs = np.fft.rfftfreq(len(audio), 1 / sample_rate)
    band = np.nonzero((freqs >= 100) & (freqs <= 2000))[0]
    k = int(band[np.argmax(spectrum[band])])
    a, b, c = np.log(spectrum[k - 1:k + 2] + 1e-12)
    offset = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c != 0 else 0.0
    return float((k + offset) * sample_rate / len(audio))


def measure(frames: np.ndarray, audio: np.ndarray | None, sample_rate: int) -> Measurement:
    """Everything the evaluator reads from one clip (audio None or empty: no pitch)."""
    colour, direction, shape, track = measure_video(frames)
    tone = pitch(audio, sample_rate) if audio is not None and len(audio) else None
    return Measurement(colour, direction, shape, tone, track)


def psnr(a: np.ndarray, b: np.ndarray) -> float:
    """Peak signal-to-noise ratio in dB of two uint8 arrays of one shape."""
    if a.shape != b.shape:
        raise ValueError(f"psnr: shapes differ, {a.shape} vs {b.shape}")
    mse = np.mean((a.astype(np.float64) - b.astype(np.float64)) ** 2)
    return float("inf") if mse == 0 else float(10 * np.log10(255.0**2 / mse))


def _check_frames(frames: np.ndarray) -> np.ndarray:
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected [T, H, W, 3] uint8, got {frames.dtype} {frames.shape}")
    return frames
