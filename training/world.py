"""The demo world: seeded procedural clips of one moving shape, with its sound.

numpy only. `World.clip(seed)` draws one clip's attributes from the seed and
renders them; the same seed gives the same clip on every machine.

A clip (17 frames at 8 fps = 2.125 s, 64x64, the demo preset's geometry):
- one object: a shape (circle, square, triangle) of one colour and size on a
  plain dark background, starting somewhere and moving left, right, up or
  down at a constant speed; it bounces off the walls;
- its sound: a tone whose pitch is set by the shape (circle low, square
  middle, triangle high) and a click at every bounce;
- its structure: what the paper's stylization task conditions on instead of
  the pixels (optical flow and depth from off-the-shelf estimators), in the
  encoding of vp.runtime.structure. Here the world knows them exactly: the
  object's coverage, coloured by its true motion into the next frame, at full
  nearness; `vp.runtime.structure.SilhouetteFlow` estimates the same signal
  from the pixels of an input video.

Edges are anti-aliased (4x4 supersampling), so the tokenizer learns smooth
boundaries instead of staircase noise.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from vp.runtime.structure import flow_of_track, structure_video

SHAPES = ("circle", "square", "triangle")
COLOURS: dict[str, tuple[int, int, int]] = {
    "red": (225, 40, 40),
    "green": (40, 200, 60),
    "blue": (50, 90, 235),
    "yellow": (235, 215, 40),
    "white": (240, 240, 240),
    "magenta": (215, 50, 205),
}
DIRECTIONS: dict[str, tuple[int, int]] = {"left": (-1, 0), "right": (1, 0), "up": (0, -1), "down": (0, 1)}
SIZES: dict[str, float] = {"small": 6.0, "large": 10.0}  # half-extent in pixels
SPEEDS: dict[str, float] = {"slow": 1.5, "fast": 3.0}  # pixels per frame
# Pitch by shape: whole numbers of periods in one 40 ms audio-token frame (8 kHz, hop 320),
# so a steady tone is the same waveform in every token frame; none is a multiple of another.
PITCH_HZ: dict[str, float] = {"circle": 250.0, "square": 400.0, "triangle": 650.0}
BACKGROUND = (28, 28, 34)
# seeds below this draw training clips; the evaluator's held-out clips start here
HELD_OUT_SEED = 1_000_000_000
SUPERSAMPLE = 4
# the object starts this many frames of travel away from the wall it heads for, so that its
# first frames show the captioned direction before any bounce
FREE_FRAMES = 6


@dataclass(frozen=True, kw_only=True)
class WorldConfig:
    """Clip geometry and sound of the demo world (the demo preset's)."""

    frames: int = 17
    height: int = 64
    width: int = 64
    scale: int = 1  # 2 renders the same clips at 128x128 (the super-resolution truth)
    fps: int = 8
    sample_rate: int = 8000
    tone_amplitude: float = 0.3
    click_amplitude: float = 0.6

    @property
    def base_size(self) -> tuple[int, int]:
        """(height, width) of the grid that attributes and motion are given in."""
        return self.height // self.scale, self.width // self.scale

    @property
    def audio_samples(self) -> int:
        return round(self.frames / self.fps * self.sample_rate)

    def doubled(self) -> WorldConfig:
        """The same clips rendered at twice the height and width (the super-resolution truth)."""
        return replace(self, height=2 * self.height, width=2 * self.width, scale=2 * self.scale)


@dataclass(frozen=True)
class Attributes:
    """What a clip shows; the caption is made from these."""

    shape: str
    colour: str
    size: str
    direction: str
    speed: str
    start: tuple[float, float]  # (x, y) centre in pixels at frame 0


@dataclass(frozen=True)
class Clip:
    """frames: [T, H, W, 3] uint8; audio: [N] float32 in [-1, 1]; structure: [T, H, W, 3] uint8.
    track: [T, 2] float (x, y) centre per frame (base grid); bounces: frame times (float) of wall hits.
    """

    attributes: Attributes
    frames: np.ndarray
    audio: np.ndarray
    structure: np.ndarray
    track: np.ndarray
    bounces: tuple[float, ...]


class World:
    """Draws and renders demo clips: `clip(seed)`, or `render(attributes)` for chosen ones."""

    def __init__(self, config: WorldConfig = WorldConfig()):
        self.config = config

    def attributes(self, seed: int) -> Attributes:
        """The attributes seed `seed` draws (uniform over every choice)."""
        rng = np.random.Generator(np.random.PCG64(seed))
        shape = SHAPES[rng.integers(len(SHAPES))]
        colour = list(COLOURS)[rng.integers(len(COLOURS))]
        size = list(SIZES)[rng.integers(len(SIZES))]
        direction = list(DIRECTIONS)[rng.integers(len(DIRECTIONS))]
        speed = list(SPEEDS)[rng.integers(len(SPEEDS))]
        r, v = SIZES[size], SPEEDS[speed]
        height, width = self.config.base_size
        dx, dy = DIRECTIONS[direction]
        start = []
        for extent, d in ((width, dx), (height, dy)):
            low, high = r, extent - r
            if d > 0:
                high -= FREE_FRAMES * v
            elif d < 0:
                low += FREE_FRAMES * v
            start.append(float(rng.uniform(low, high)))
        return Attributes(shape, colour, size, direction, speed, (start[0], start[1]))

    def clip(self, seed: int) -> Clip:
        return self.render(self.attributes(seed), seed=seed)

    def render(self, a: Attributes, seed: int = 0) -> Clip:
        """Frames, sound and structure of the clip with attributes `a` (seed: the click noise)."""
        c = self.config
        track, bounces = self._trajectory(a)
        k = c.scale
        cover = np.stack([self.coverage(a.shape, SIZES[a.size] * k, x * k, y * k) for x, y in track])  # (T, H, W)
        colour = np.array(COLOURS[a.colour], np.float32)
        background = np.array(BACKGROUND, np.float32)
        frames = np.round(background + cover[..., None] * (colour - background)).astype(np.uint8)
        structure = structure_video(cover, flow_of_track(track * k))
        audio = self._sound(a.shape, bounces, seed)
        return Clip(a, frames, audio, structure, track, tuple(bounces))

    def _trajectory(self, a: Attributes) -> tuple[np.ndarray, list[float]]:
        """Centres [T, 2] and bounce times, stepping in sub-frames so that a wall hit is timed to 1/16 frame."""
        c = self.config
        height, width = c.base_size
        r, speed = SIZES[a.size], SPEEDS[a.speed]
        pos = np.array(a.start, np.float64)
        vel = np.array(DIRECTIONS[a.direction], np.float64) * speed
        limits = np.array([[r, width - r], [r, height - r]])
        sub = 16
        track, bounces = [pos.copy()], []
        for t in range(c.frames - 1):
            for s in range(sub):
                pos += vel / sub
                for axis in range(2):
                    low, high = limits[axis]
                    if pos[axis] < low or pos[axis] > high:
                        pos[axis] = 2 * (low if pos[axis] < low else high) - pos[axis]
                        vel[axis] = -vel[axis]
                        bounces.append(t + (s + 1) / sub)
            track.append(pos.copy())
        return np.array(track), bounces

    def coverage(self, shape: str, r: float, x: float, y: float) -> np.ndarray:
        """[H, W] float32: the fraction of each pixel that `shape` of half-extent r centred at (x, y)
        covers (4x4 supersampling). Areas: circle pi r^2, square (1.7 r)^2, triangle 2 r^2."""
        c, k = self.config, SUPERSAMPLE
        ys = (np.arange(c.height * k) + 0.5) / k - y
        xs = (np.arange(c.width * k) + 0.5) / k - x
        dy, dx = ys[:, None], xs[None, :]
        if shape == "circle":
            inside = dx * dx + dy * dy <= r * r
        elif shape == "square":
            inside = (np.abs(dx) <= r * 0.85) & (np.abs(dy) <= r * 0.85)  # the same area feel as the circle
        else:  # an upright isosceles triangle inscribed in the r-box
            inside = (dy <= r) & (dy >= -r) & (np.abs(dx) <= (dy + r) / 2)
        return inside.reshape(c.height, k, c.width, k).mean(axis=(1, 3)).astype(np.float32)

    def _sound(self, shape: str, bounces: list[float], seed: int) -> np.ndarray:
        """[N] float32: the shape's tone (10 ms fade in and out) plus a 15 ms click at each bounce."""
        c = self.config
        n = c.audio_samples
        t = np.arange(n) / c.sample_rate
        wave = c.tone_amplitude * np.sin(2 * np.pi * PITCH_HZ[shape] * t)
        fade = min(n // 2, round(0.01 * c.sample_rate))
        ramp = np.linspace(0, 1, fade)
        wave[:fade] *= ramp
        wave[n - fade:] *= ramp[::-1]
        rng = np.random.Generator(np.random.PCG64(seed))
        length = round(0.015 * c.sample_rate)
        envelope = np.exp(-np.arange(length) / (0.003 * c.sample_rate))
        for when in bounces:
            start = round(when / c.fps * c.sample_rate)
            piece = c.click_amplitude * envelope * rng.uniform(-1, 1, length)
            end = min(n, start + length)
            wave[start:end] += piece[:end - start]
        return np.clip(wave, -1, 1).astype(np.float32)
