"""The token dataset: demo clips through the trained tokenizers, once, for the LLM and super-resolution stages.

One row per training clip (seed i), codes as int16 (-1 where a row has none):

    video      [N, t, h, w]     the clip
    structure  [N, t, h, w]     its structure video (the stylization prefix)
    audio      [N, F, levels]   its sound
    long_video [N, t, h, w]     frames 8..24 of the same clip rendered 25 frames long, encoded
    long_audio [N, F, levels]   as a clip of their own: the long-video task's next clip
    inpaint    [N, t, h, w]     the clip with a box set to mid grey (the box is to be filled)
    outpaint   [N, t, h, w]     the clip with all but a box set to mid grey
    hires      [N, t, 2h, 2w]   the clip rendered at 128x128 (the super-resolution target)
    attributes [N, 5]           indices of shape, colour, size, direction, speed

The long, inpaint/outpaint and hires rows exist for every `sparse_every`-th
clip only (they cost one to four more encodes each).
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from vp.models.audio_tokenizer import AudioTokenizer
from vp.models.video_tokenizer import VideoTokenizer
from vp.runtime.conditioning import video_to_model
from vp.training.world import COLOURS, DIRECTIONS, SHAPES, SIZES, SPEEDS, Attributes, World

ATTRIBUTE_NAMES = {"shape": SHAPES, "colour": tuple(COLOURS), "size": tuple(SIZES),
                   "direction": tuple(DIRECTIONS), "speed": tuple(SPEEDS)}
LONG_OFFSET = 8  # frames: the long-video task conditions on the last second (fps + 1 frames) of a clip


@dataclass(frozen=True, kw_only=True)
class TokenRecipe:
    # rows 0-2999 are the same clips at any count; the LLM's first two cycles drew from 3000, its
    # later rounds (vp-train llm --round N) from 6000
    clips: int = 6000
    sparse_every: int = 3
    batch: int = 8
    seed: int = 3


def mask_box(rng: np.random.Generator, height: int, width: int, outpaint: bool) -> tuple[int, int, int, int]:
    """A random box x0, y0, x1, y1: the region inpainting fills (16-40 px) or outpainting keeps (24-48 px)."""
    low, high = (24, 48) if outpaint else (16, 40)
    w, h = rng.integers(low, high + 1, size=2)
    x0, y0 = rng.integers(0, width - w + 1), rng.integers(0, height - h + 1)
    return int(x0), int(y0), int(x0 + w), int(y0 + h)


def masked(frames: np.ndarray, box: tuple[int, int, int, int], outpaint: bool) -> np.ndarray:
    """frames [T, H, W, 3] uint8 with the box (inpaint) or all but the box (outpaint) set to 128."""
    x0, y0, x1, y1 = box
    inside = np.zeros(frames.shape[1:3], bool)
    inside[y0:y1, x0:x1] = True
    mask = ~inside if outpaint else inside
    out = frames.copy()
    out[:, mask] = 128
    return out


def build(video_tokenizer: VideoTokenizer, audio_tokenizer: AudioTokenizer, world: World,
          recipe: TokenRecipe, path: Path) -> Path:
    """Encode recipe.clips training clips into the npz at `path` (written whole, then renamed)."""
    c = world.config
    long_world = World(replace(c, frames=c.frames + LONG_OFFSET))
    hires_world = World(c.doubled())
    n = recipe.clips
    grid = video_tokenizer.config.latent_shape(c.frames, c.height, c.width)
    frames_a = audio_tokenizer.config.frames(c.audio_samples)
    levels = audio_tokenizer.config.levels
    out = {
        "video": np.full((n, *grid), -1, np.int16), "structure": np.full((n, *grid), -1, np.int16),
        "audio": np.full((n, frames_a, levels), -1, np.int16),
        "long_video": np.full((n, *grid), -1, np.int16), "long_audio": np.full((n, frames_a, levels), -1, np.int16),
        "inpaint": np.full((n, *grid), -1, np.int16), "outpaint": np.full((n, *grid), -1, np.int16),
        "hires": np.full((n, grid[0], 2 * grid[1], 2 * grid[2]), -1, np.int16),
        "attributes": np.zeros((n, len(ATTRIBUTE_NAMES)), np.int8),
    }
    rng = np.random.Generator(np.random.PCG64(recipe.seed))
    seed0 = recipe.seed * 10_000_000
    with torch.no_grad():
        for first in tqdm(range(0, n, recipe.batch), desc="tokens", unit="clip", unit_scale=recipe.batch):
            rows = range(first, min(n, first + recipe.batch))
            videos: dict[str, list[tuple[int, np.ndarray]]] = {k: [] for k in
                                                               ("video", "structure", "long_video", "inpaint",
                                                                "outpaint", "hires")}
            sounds: dict[str, list[tuple[int, np.ndarray]]] = {"audio": [], "long_audio": []}
            for row in rows:
                seed = seed0 + row
                clip = world.clip(seed)
                a = clip.attributes
                out["attributes"][row] = [ATTRIBUTE_NAMES[k].index(getattr(a, k)) for k in ATTRIBUTE_NAMES]
                videos["video"].append((row, clip.frames))
                videos["structure"].append((row, clip.structure))
                sounds["audio"].append((row, clip.audio))
                if row % recipe.sparse_every == 0:
                    long_clip = long_world.render(a, seed=seed)
                    videos["long_video"].append((row, long_clip.frames[LONG_OFFSET:]))
                    start = round(LONG_OFFSET / c.fps * c.sample_rate)
                    sounds["long_audio"].append((row, long_clip.audio[start:start + c.audio_samples]))
                    for kind in ("inpaint", "outpaint"):
                        box = mask_box(rng, c.height, c.width, kind == "outpaint")
                        videos[kind].append((row, masked(clip.frames, box, kind == "outpaint")))
                    videos["hires"].append((row, hires_world.render(a, seed=seed).frames))
            for key, items in videos.items():
                if items:
                    x = torch.from_numpy(np.concatenate([video_to_model(f) for _, f in items]))
                    codes = video_tokenizer.encode(x).numpy()
                    out[key][[r for r, _ in items]] = codes
            for key, items in sounds.items():
                if items:
                    codes = audio_tokenizer.encode(torch.from_numpy(np.stack([w for _, w in items]))).numpy()
                    out[key][[r for r, _ in items]] = codes
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.stem}.partial.npz")
    np.savez_compressed(tmp, **out)
    tmp.replace(path)
    return path


def attributes_of(indices: np.ndarray) -> Attributes:
    """The attributes of a dataset row's `attributes` indices (the start position is not kept)."""
    return Attributes(*(ATTRIBUTE_NAMES[k][int(i)] for k, i in zip(ATTRIBUTE_NAMES, indices)), start=(0.0, 0.0))


def load(path: Path) -> dict[str, np.ndarray]:
    """The arrays of a token dataset npz (int64 codes)."""
    if not path.is_file():
        raise ValueError(f"no token dataset at {path}: run `vp-train tokens` first")
    with np.load(path) as data:
        return {k: data[k].astype(np.int64) for k in data.files}
