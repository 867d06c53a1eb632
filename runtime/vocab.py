"""The vocabulary of the LLM: special and task tokens, and the id range of each modality.

numpy only: the torch reference (vp.models) and the lean runtime share this
module (and the task layouts over it, vp.runtime.layout), so their token
streams cannot drift apart.

Ids, in order:

    [0, 256)                      special and task tokens
    [256, 256 + V)                visual codes (V = 2^codebook_bits; 2^18 in the paper)
    then audio level 0 .. L-1     one range of A codes per residual-VQ level
    then text words               a reserved range (~300k ids in all for the paper);
                                  no vp layout emits it: text reaches the LLM as
                                  embeddings of the frozen encoder, in text slots

vp's choices where the paper is silent:
- `<task>` takes one id per task (TASK_IDS), at 16 + the task's index.
- Audio is flattened level-major (level 0 of the whole clip, then level 1, ...),
  each level in its own id range.
- `<source>` has an id but no layout uses it: the paper gives it no inference role.
"""

from __future__ import annotations

import enum
from dataclasses import asdict, dataclass

import numpy as np


class Special(enum.IntEnum):
    """The fixed special tokens. `<task>` is a family: see TASK_IDS."""

    BOS = 0
    BOT_I = 1
    EOT_I = 2
    BOV_I = 3
    EOV_I = 4
    BOA_I = 5
    EOA_I = 6
    SOURCE = 7
    RES = 8
    BOV_O = 9
    EOV_O = 10
    BOA_O = 11
    EOA_O = 12
    EOS = 13
    TEXT_SLOT = 255  # placeholder id of a text position; its embedding is never read


class Task(str, enum.Enum):
    TEXT_TO_VIDEO = "t2v"
    TEXT_TO_IMAGE = "t2i"
    IMAGE_TO_VIDEO = "i2v"
    UNCONDITIONAL = "uncond"
    CONTINUATION = "continue"
    LONG_VIDEO = "long"
    INPAINT = "inpaint"
    OUTPAINT = "outpaint"
    VIDEO_TO_AUDIO = "v2a"
    AUDIO_TO_VIDEO = "a2v"
    AUDIO_VIDEO_CONTINUATION = "av-continue"
    STYLIZATION = "stylize"


TASK_IDS: dict[Task, int] = {task: 16 + i for i, task in enumerate(Task)}

# The 15 special tokens of the paper, by name; <task> stands for the TASK_IDS family.
SPECIAL_TOKENS: dict[str, int] = {
    "<bos>": Special.BOS, "<task>": TASK_IDS[Task.TEXT_TO_VIDEO], "<bot_i>": Special.BOT_I,
    "<eot_i>": Special.EOT_I, "<bov_i>": Special.BOV_I, "<eov_i>": Special.EOV_I,
    "<boa_i>": Special.BOA_I, "<eoa_i>": Special.EOA_I, "<source>": Special.SOURCE,
    "<res>": Special.RES, "<bov_o>": Special.BOV_O, "<eov_o>": Special.EOV_O,
    "<boa_o>": Special.BOA_O, "<eoa_o>": Special.EOA_O, "<eos>": Special.EOS,
}

SPECIAL_RANGE = 256
HEAD_NAMES = ("visual", "audio")  # Vocabulary.heads(), in order


@dataclass(frozen=True, kw_only=True)
class Vocabulary:
    """Id ranges of the LLM vocabulary; see the module docstring for the order."""

    visual_codes: int
    audio_levels: int
    audio_codes: int
    text_words: int = 0

    @property
    def visual_offset(self) -> int:
        return SPECIAL_RANGE

    def audio_offset(self, level: int) -> int:
        return SPECIAL_RANGE + self.visual_codes + level * self.audio_codes

    @property
    def text_offset(self) -> int:
        return self.audio_offset(self.audio_levels)

    @property
    def size(self) -> int:
        return self.text_offset + self.text_words

    def visual_range(self) -> tuple[int, int]:
        return self.visual_offset, self.visual_offset + self.visual_codes

    def audio_range(self, level: int) -> tuple[int, int]:
        return self.audio_offset(level), self.audio_offset(level) + self.audio_codes

    def heads(self) -> tuple[tuple[int, int], ...]:
        """The LLM's output heads, as id ranges [low, high): the visual codes, then (with audio) all
        audio levels together. Every sampled position's range lies inside one head, and the LLM
        graph computes logits for that head only (docs/engine-contract.md); specials and text
        words are never sampled, so no head covers them."""
        audio = (self.audio_offset(0), self.audio_offset(self.audio_levels)) if self.audio_levels else None
        return (self.visual_range(), *((audio,) if audio else ()))

    @property
    def head_width(self) -> int:
        """Columns of the LLM's logits: the widest head (a narrower one is padded after its ids)."""
        return max(high - low for low, high in self.heads())

    def head_of(self, low: int, high: int) -> int:
        """The index of the head whose ids hold the range [low, high)."""
        for index, (head_low, head_high) in enumerate(self.heads()):
            if head_low <= low < high <= head_high:
                return index
        raise ValueError(f"no output head holds ids [{low}, {high}): heads {self.heads()}")

    def video_ids(self, codes: np.ndarray) -> np.ndarray:
        """codes: [t, h, w] int in [0, visual_codes) -> ids: [t*h*w] int64, (t, h, w) row-major."""
        codes = check_codes("video codes [t, h, w]", codes, 3, self.visual_codes)
        return codes.reshape(-1) + self.visual_offset

    def video_codes_from_ids(self, ids: np.ndarray, grid: tuple[int, int, int]) -> np.ndarray:
        """Inverse of video_ids: ids [t*h*w] -> codes [t, h, w] int64."""
        ids = np.asarray(ids, np.int64)
        low, high = self.visual_range()
        if ids.size != int(np.prod(grid)) or ids.min(initial=low) < low or ids.max(initial=low) >= high:
            raise ValueError(f"expected {int(np.prod(grid))} visual ids in [{low}, {high}) for grid {grid}")
        return (ids - low).reshape(grid)

    def audio_ids(self, codes: np.ndarray) -> np.ndarray:
        """codes: [frames, levels] int in [0, audio_codes) -> ids [levels*frames] int64, level-major."""
        codes = check_codes("audio codes [frames, levels]", codes, 2, self.audio_codes)
        if codes.shape[1] != self.audio_levels:
            raise ValueError(f"audio codes: expected {self.audio_levels} levels, got shape {codes.shape}")
        offsets = np.array([self.audio_offset(level) for level in range(self.audio_levels)])
        return (codes + offsets).T.reshape(-1)  # (levels, frames) flattened

    def audio_codes_from_ids(self, ids: np.ndarray, frames: int) -> np.ndarray:
        """Inverse of audio_ids: level-major ids -> codes [frames, levels] int64."""
        ids = np.asarray(ids, np.int64)
        if ids.size != frames * self.audio_levels:
            raise ValueError(f"expected {frames * self.audio_levels} audio ids, got {ids.size}")
        levels = ids.reshape(self.audio_levels, frames)
        offsets = np.array([self.audio_offset(level) for level in range(self.audio_levels)])[:, None]
        codes = levels - offsets
        if codes.min(initial=0) < 0 or codes.max(initial=0) >= self.audio_codes:
            raise ValueError("audio ids lie outside their level's range")
        return codes.T.copy()

    def to_dict(self) -> dict:
        return asdict(self)


def check_codes(name: str, codes: np.ndarray, ndim: int, size: int) -> np.ndarray:
    """codes as int64 after checking their rank, integer dtype and range [0, size)."""
    codes = np.asarray(codes)
    if codes.ndim != ndim or not np.issubdtype(codes.dtype, np.integer):
        raise ValueError(f"{name}: expected {ndim} integer dims, got {codes.dtype} shape {codes.shape}")
    if codes.size and (codes.min() < 0 or codes.max() >= size):
        raise ValueError(f"{name}: values must lie in [0, {size}), got [{codes.min()}, {codes.max()}]")
    return codes.astype(np.int64)
