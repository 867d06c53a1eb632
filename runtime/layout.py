"""The sequence layout of every task over the vocabulary (PAPER.md; ids: vp.runtime.vocab).

numpy only, shared by the torch reference and the runtime. A sequence is a
prefix (conditioning; bidirectional attention) and an output (generated;
causal). The layout tells for every output position either the id that must
stand there (special tokens, given latent frames) or the id range to sample
from.

    prefix: <bos> <task> [<bot_i> text <eot_i>] [<bov_i> video <eov_i>] [<boa_i> audio <eoa_i>] [<res>]
    output: <bov_o> video <eov_o> [<boa_o> audio <eoa_o>] <eos>

vp's choices where the paper is silent (documented here once):
- The text block holds one TEXT_SLOT placeholder per text token; the LLM reads
  the text encoder's embedding there instead of a token embedding.
- Conditioning video (continuation, image-to-video, long video) goes into the
  prefix AND its latent frames are forced at the start of the output video, so
  that the output block is always a whole clip and the causal tokenizer decodes
  it from its first frame. Audio-video continuation does the same for audio.
- Inpainting/outpainting: the masked video (masked pixels set to 0, mid grey)
  is encoded into the prefix (the paper's COMMIT encoding is not reproduced).
- Text-to-image: the output is `<bov_o>` and one latent frame, no `<eov_o>`, no `<eos>`.
- `<res>` closes the prefix when the output is portrait (e.g. 128 wide x 224 tall).
- Classifier-free guidance drops the text block (the same layout with text_len=0).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from vp.runtime.vocab import TASK_IDS, Special, Task, Vocabulary, check_codes


@dataclass(frozen=True)
class Forced:
    """Output positions whose ids the layout fixes: ids [n] int64."""

    ids: tuple[int, ...]


@dataclass(frozen=True)
class Sampled:
    """`count` output positions, each drawn from the ids [low, high)."""

    low: int
    high: int
    count: int
    what: str  # "video" or "audio level L": for progress and errors


OutputStep = Forced | Sampled


@dataclass(frozen=True)
class SequenceLayout:
    """One task's sequence: the prefix ids and the plan of the output.

    prefix: [P] int64, TEXT_SLOT at the text positions.
    text_start: index of the first text slot in the prefix; text_len slots follow.
    output: the output plan in order; `positions()` expands it.
    video_grid: latent grid (t, h, w) of the output video (None without video).
    audio_frames: latent frames of the output audio (0 without audio).
    """

    task: Task
    prefix: np.ndarray
    text_start: int
    text_len: int
    output: tuple[OutputStep, ...]
    video_grid: tuple[int, int, int] | None
    audio_frames: int

    @property
    def prefix_len(self) -> int:
        return len(self.prefix)

    @property
    def output_len(self) -> int:
        return sum(len(s.ids) if isinstance(s, Forced) else s.count for s in self.output)

    @property
    def total_len(self) -> int:
        return self.prefix_len + self.output_len

    def text_mask(self) -> np.ndarray:
        """[P] bool, True at the text slots."""
        mask = np.zeros(self.prefix_len, bool)
        mask[self.text_start:self.text_start + self.text_len] = True
        return mask

    def positions(self) -> list[tuple[int, int, int]]:
        """Every output position as (forced id or -1, low, high)."""
        out = []
        for step in self.output:
            if isinstance(step, Forced):
                out.extend((i, i, i + 1) for i in step.ids)
            else:
                out.extend((-1, step.low, step.high) for _ in range(step.count))
        return out

    def split_output(self, output_ids: np.ndarray, vocab: Vocabulary) -> tuple[np.ndarray | None, np.ndarray | None]:
        """Output ids [output_len] -> (video codes [t, h, w] or None, audio codes [frames, levels] or None)."""
        output_ids = np.asarray(output_ids, np.int64)
        if output_ids.shape != (self.output_len,):
            raise ValueError(f"expected {self.output_len} output ids, got shape {output_ids.shape}")
        video = audio = None
        lo_v, hi_v = vocab.visual_range()
        lo_a, hi_a = vocab.audio_range(0)[0], vocab.audio_range(vocab.audio_levels - 1)[1]
        if self.video_grid is not None:
            ids = output_ids[(output_ids >= lo_v) & (output_ids < hi_v)]
            video = vocab.video_codes_from_ids(ids, self.video_grid)
        if self.audio_frames:
            ids = output_ids[(output_ids >= lo_a) & (output_ids < hi_a)]
            audio = vocab.audio_codes_from_ids(ids, self.audio_frames)
        return video, audio


@dataclass(frozen=True, kw_only=True)
class ClipGeometry:
    """Latent geometry of one clip: what the LLM generates per task.

    video_grid: (t, h, w) latent tokens of a landscape/square clip.
    portrait_grid: (t, h, w) of the portrait clip marked with <res>, or None.
    audio_frames: latent audio frames of a clip (106 for 2.125 s at 16 kHz, hop 320).
    """

    video_grid: tuple[int, int, int]
    portrait_grid: tuple[int, int, int] | None
    audio_frames: int


class SequenceBuilder:
    """Builds the SequenceLayout of each task over one vocabulary and clip geometry.

    Conditioning media arrive as codes: video [t, h, w] (t latent frames, t <= the
    clip's), audio [frames, levels]. text_len is the number of text slots (0 = no
    text block, which is also the unconditional branch of CFG).
    """

    def __init__(self, vocab: Vocabulary, geometry: ClipGeometry):
        self.vocab = vocab
        self.geometry = geometry

    def build(
        self,
        task: Task | str,
        *,
        text_len: int = 0,
        video: np.ndarray | None = None,
        audio: np.ndarray | None = None,
        with_audio: bool = False,
        portrait: bool = False,
    ) -> SequenceLayout:
        """The layout of `task`; raises ValueError when an input it needs is missing."""
        task = Task(task)
        g = self.geometry
        grid = g.portrait_grid if portrait else g.video_grid
        if grid is None:
            raise ValueError("this preset has no portrait geometry")
        if not 0 <= text_len <= 64:
            raise ValueError(f"text_len must lie in [0, 64] (paper: at most 64 text positions), got {text_len}")
        needs_video = task in {Task.IMAGE_TO_VIDEO, Task.CONTINUATION, Task.LONG_VIDEO, Task.INPAINT,
                               Task.OUTPAINT, Task.VIDEO_TO_AUDIO, Task.AUDIO_VIDEO_CONTINUATION, Task.STYLIZATION}
        needs_audio = task in {Task.AUDIO_TO_VIDEO, Task.AUDIO_VIDEO_CONTINUATION}
        if needs_video and video is None:
            raise ValueError(f"task {task.value} needs input video codes")
        if needs_audio and audio is None:
            raise ValueError(f"task {task.value} needs input audio codes")
        if not needs_video:
            video = None
        if not needs_audio:
            audio = None
        if video is not None:
            video = check_codes("video codes [t, h, w]", video, 3, self.vocab.visual_codes)
            self._check_grid(task, video, grid)
        if audio is not None:
            audio = check_codes("audio codes [frames, levels]", audio, 2, self.vocab.audio_codes)
            if task is Task.AUDIO_TO_VIDEO and audio.shape[0] != g.audio_frames:
                raise ValueError(f"task a2v: expected {g.audio_frames} latent audio frames (a whole clip), got {audio.shape[0]}")

        prefix = [Special.BOS, TASK_IDS[task]]
        text_start = 0
        if text_len and task not in {Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO}:
            prefix.append(Special.BOT_I)
            text_start = len(prefix)
            prefix += [Special.TEXT_SLOT] * text_len
            prefix.append(Special.EOT_I)
        else:
            text_len = 0
        if video is not None:
            prefix += [Special.BOV_I, *self.vocab.video_ids(video), Special.EOV_I]
        if audio is not None:
            prefix += [Special.BOA_I, *self.vocab.audio_ids(audio), Special.EOA_I]
        if portrait:
            prefix.append(Special.RES)

        # what the output keeps of the conditioning
        given_video = video if task in {Task.IMAGE_TO_VIDEO, Task.CONTINUATION, Task.LONG_VIDEO,
                                        Task.AUDIO_VIDEO_CONTINUATION} else None
        given_audio = audio if task is Task.AUDIO_VIDEO_CONTINUATION else None
        out_video = task is not Task.VIDEO_TO_AUDIO
        out_audio = task in {Task.VIDEO_TO_AUDIO, Task.AUDIO_VIDEO_CONTINUATION} or (
            with_audio and task in {Task.TEXT_TO_VIDEO, Task.UNCONDITIONAL, Task.IMAGE_TO_VIDEO,
                                    Task.CONTINUATION, Task.LONG_VIDEO})
        output: list[OutputStep] = []
        video_grid = None
        if task is Task.TEXT_TO_IMAGE:
            video_grid = (1, grid[1], grid[2])
            output += [Forced((Special.BOV_O,)), Sampled(*self.vocab.visual_range(), grid[1] * grid[2], "video")]
        elif out_video:
            video_grid = grid
            output += [Forced((Special.BOV_O,)), *self._video_steps(grid, given_video), Forced((Special.EOV_O,))]
        if out_audio:
            output += [Forced((Special.BOA_O,)), *self._audio_steps(given_audio), Forced((Special.EOA_O,))]
        if task is not Task.TEXT_TO_IMAGE:
            output.append(Forced((Special.EOS,)))
        return SequenceLayout(
            task=task,
            prefix=np.array(prefix, np.int64),
            text_start=text_start,
            text_len=text_len,
            output=tuple(output),
            video_grid=video_grid,
            audio_frames=g.audio_frames if out_audio else 0,
        )

    def _check_grid(self, task: Task, video: np.ndarray, grid: tuple[int, int, int]) -> None:
        t, h, w = video.shape
        if (h, w) != grid[1:]:
            raise ValueError(f"input video codes: expected a latent grid of {grid[1]}x{grid[2]}, got {h}x{w}")
        whole = task in {Task.INPAINT, Task.OUTPAINT, Task.VIDEO_TO_AUDIO, Task.STYLIZATION}
        if whole and t != grid[0]:
            raise ValueError(f"task {task.value}: expected {grid[0]} latent frames of input video, got {t}")
        if task is Task.IMAGE_TO_VIDEO and t != 1:
            raise ValueError(f"task i2v: expected 1 latent frame (an image), got {t}")
        if not 1 <= t <= grid[0]:
            raise ValueError(f"input video: expected 1 to {grid[0]} latent frames, got {t}")
        if t == grid[0] and task in {Task.CONTINUATION, Task.LONG_VIDEO, Task.AUDIO_VIDEO_CONTINUATION}:
            raise ValueError(f"task {task.value}: the input fills the whole clip ({t} latent frames); nothing to continue")

    def _video_steps(self, grid: tuple[int, int, int], given: np.ndarray | None) -> list[OutputStep]:
        per_frame = grid[1] * grid[2]
        steps: list[OutputStep] = []
        known = 0
        if given is not None:
            steps.append(Forced(tuple(int(i) for i in self.vocab.video_ids(given))))
            known = given.shape[0]
        steps.append(Sampled(*self.vocab.visual_range(), (grid[0] - known) * per_frame, "video"))
        return steps

    def _audio_steps(self, given: np.ndarray | None) -> list[OutputStep]:
        frames = self.geometry.audio_frames
        known = 0 if given is None else given.shape[0]
        if known >= frames:
            raise ValueError(f"input audio: expected fewer than {frames} latent frames, got {known}")
        steps: list[OutputStep] = []
        for level in range(self.vocab.audio_levels):
            low, high = self.vocab.audio_range(level)
            if known:
                steps.append(Forced(tuple(int(c) + low for c in given[:, level])))
            steps.append(Sampled(low, high, frames - known, f"audio level {level}"))
        return steps
