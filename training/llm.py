"""Training recipe of the demo prefix LM (and the text projection that feeds it).

Every example is one task's sequence layout (vp.runtime.layout, the layouts
the runtime generates with) filled with the true tokens of a clip from the
token dataset. The loss is next-token cross-entropy on the output positions
the runtime samples, over the id range each may emit (the sampler draws from
that range only); the prefix is conditioning, as in the paper.

Task mix: the paper trains on a mixture of these tasks without stating the
proportions (PAPER.md); vp's choice weights text-to-video with audio, the
task the README demonstrates, and keeps every task the world allows. Each
step's batch is one task (drawn by TASK_MIX), so it is nearly free of padding. Text is
dropped from 10% of text-conditioned examples, so the same model gives the
unconditional branch of classifier-free guidance.

Contrast (rounds from 4 on, `LLMRecipe.contrast_weight`): the next-token loss
binds a condition to the output only as much as the output's tokens pay for
it, and the sign of a motion shows at a few tokens of a clip's first moving
frames (a swapped direction word cost round 3's LLM 0.3 nats of latent frame
1, a swapped colour 10; benchmarks/word_swap.py). So a text-to-video example
with its caption is also scored under the same phrasing with another
direction (any of the three: swapping only to the opposite taught round 4's
first trial to tell left from right and then read left as down), and a
video-to-audio example under another clip's video of another shape; a hinge
asks the true output's summed loss over the compared tokens (the video of
latent frames 1-2; the first audio tokens, CONTRAST_AUDIO_TOKENS) to be at
least `contrast_margin` nats lower under the true condition than under the
swapped one. The swapped sequences take no next-token loss of their own.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from vp.models.prefix_lm import PrefixLM
from vp.models.text_encoder import TextEncoder
from vp.runtime.layout import SequenceBuilder, SequenceLayout
from vp.runtime.vocab import SPECIAL_RANGE, Task
from vp.training.captions import caption as phrase, training_phrasing
from vp.training.stage import Schedule, Stage
from vp.training.tokens import ATTRIBUTE_NAMES, attributes_of
from vp.training.world import DIRECTIONS

TASK_MIX: dict[Task, float] = {
    Task.TEXT_TO_VIDEO: 0.33, Task.TEXT_TO_IMAGE: 0.05, Task.IMAGE_TO_VIDEO: 0.10, Task.CONTINUATION: 0.05,
    Task.LONG_VIDEO: 0.05, Task.INPAINT: 0.05, Task.OUTPAINT: 0.05, Task.VIDEO_TO_AUDIO: 0.08,
    Task.AUDIO_TO_VIDEO: 0.05, Task.AUDIO_VIDEO_CONTINUATION: 0.05, Task.STYLIZATION: 0.09,
    Task.UNCONDITIONAL: 0.05,
}
NO_TEXT = {Task.UNCONDITIONAL, Task.VIDEO_TO_AUDIO}
SPARSE = {Task.LONG_VIDEO: "long_video", Task.INPAINT: "inpaint", Task.OUTPAINT: "outpaint"}
# a v2a contrast compares the first audio tokens: the coarsest level's first 8 frames (0.32 s), where
# the tone is chosen (the ids are level-major; later tokens follow the tone of the ones before them)
CONTRAST_AUDIO_TOKENS = 8


@dataclass(frozen=True, kw_only=True)
class LLMRecipe:
    steps: int = 2800  # two cosine cycles of 1400 (the second added when the first left the loss falling)
    cycles: int = 2
    batch: int = 8
    lr: float = 1.5e-3
    text_dropout: float = 0.1
    seed: int = 4
    train_projection: bool = True
    contrast_weight: float = 0.0  # 0: no contrast term (module docstring)
    contrast_margin: float = 8.0  # nats, summed over an example's compared tokens


def round_recipe(round_: int) -> LLMRecipe:
    """The recipe of round `round_` (`vp-train llm --round N`). Round 1 trains from the seeded init;
    each later round trains two more cycles from the LLM the rounds before it left, on batches no
    earlier round drew (seed 4 + N - 1), peaking where round 1's second cycle did, with the text
    projection kept as it is (the super-resolution stage was trained on its embeddings); rounds
    from 4 on add the contrast term (module docstring)."""
    if round_ == 1:
        return LLMRecipe()
    return LLMRecipe(lr=0.75e-3, seed=LLMRecipe.seed + round_ - 1, train_projection=False,
                     contrast_weight=2.0 if round_ >= 4 else 0.0)


def round_folder(round_: int) -> str:
    """The checkpoint folder of round `round_` in the work folder."""
    return "llm" if round_ == 1 else f"llm_round{round_}"


@dataclass
class Example:
    """One training sequence: ids [S] int64 (prefix then output), the layout it follows, the text
    caption (None without text), and per position the id range its token was drawn from
    (low = high = 0 where no loss is taken).

    counterpart: the same output under a swapped condition (the contrast term), or None;
    compared: the output indices [n] (0 = the output block's first) whose losses the contrast sums.
    """

    layout: SequenceLayout
    ids: np.ndarray
    caption: str | None
    low: np.ndarray
    high: np.ndarray
    counterpart: Example | None = None
    compared: np.ndarray | None = None


class DemoLM(nn.Module):
    """The trained parts the LLM stage owns: the prefix LM and the text projection."""

    def __init__(self, llm: PrefixLM, text_projection: nn.Linear):
        super().__init__()
        self.llm = llm
        self.text_projection = text_projection


class TextCache:
    """Caption -> the frozen encoder's hidden states [L, hidden] (computed once per caption)."""

    def __init__(self, encoder: TextEncoder):
        self.encoder = encoder
        self.cache: dict[str, torch.Tensor] = {}

    @torch.no_grad()
    @torch.autocast("cpu", enabled=False)  # fp32, as the exported text encoder runs
    def __call__(self, caption: str) -> torch.Tensor:
        if caption not in self.cache:
            tokens = self.encoder.tokenize([caption])
            ids, mask = torch.from_numpy(tokens.ids), torch.from_numpy(tokens.mask)
            self.cache[caption] = self.encoder.encoder(ids, mask)[0, :int(mask.sum())].float()
        return self.cache[caption]


def output_ids(layout: SequenceLayout, video: np.ndarray | None, audio: np.ndarray | None, vocab) -> np.ndarray:
    """The true output block of `layout`: its forced ids, and the clip's ids at the sampled positions.

    video: codes [t, h, w] of the whole output clip; audio: codes [frames, levels]. Given latent
    frames (forced) are the clip's own first frames, so both streams advance over them.
    """
    stream = {"video": iter(vocab.video_ids(video)) if video is not None else iter(()),
              "audio": iter(vocab.audio_ids(audio)) if audio is not None else iter(())}
    lo_v, hi_v = vocab.visual_range()
    out = []
    for forced, low, high in layout.positions():
        kind = "video" if low >= lo_v and high <= hi_v else "audio"
        if forced >= 0:
            if forced >= vocab.visual_offset:  # a given code: its stream moves past it
                next(stream[kind])
            out.append(forced)
        else:
            out.append(int(next(stream[kind])))
    return np.array(out, np.int64)


def make_example(task: Task, row: int, data: dict[str, np.ndarray], builder: SequenceBuilder,
                 rng: np.random.Generator, text_dropout: float, text_len_of,
                 contrast: np.random.Generator | None = None) -> Example:
    """The sequence of `task` on clip `row`; text_len_of(caption) gives a caption's token count.

    contrast: where given, a text-to-video example with text and a video-to-audio example get their
    counterpart (Example), its other clip drawn from this generator (so `rng`'s draws, and the
    batches, are the same with and without the contrast term).
    """
    vocab, g = builder.vocab, builder.geometry
    a = attributes_of(data["attributes"][row])
    caption = phrasing = None
    if task not in NO_TEXT and rng.uniform() >= text_dropout:
        phrasing = training_phrasing(a, rng)
        caption = phrase(a, *phrasing)
    video, audio = data["video"][row], data["audio"][row]
    inputs: dict = {}
    target_audio = None
    if task in {Task.TEXT_TO_VIDEO, Task.UNCONDITIONAL}:
        inputs["with_audio"] = True
        target_audio = audio
    elif task is Task.IMAGE_TO_VIDEO:
        inputs["video"] = video[:1]
    elif task is Task.CONTINUATION:
        inputs["video"] = video[:rng.integers(1, g.video_grid[0])]
    elif task is Task.LONG_VIDEO:
        video = data["long_video"][row]
        inputs["video"] = video[:3]  # the last second (fps + 1 = 9 frames) of the clip before
    elif task in {Task.INPAINT, Task.OUTPAINT}:
        inputs["video"] = data[SPARSE[task]][row]
    elif task is Task.VIDEO_TO_AUDIO:
        inputs["video"] = video
        target_audio = audio
    elif task is Task.AUDIO_TO_VIDEO:
        inputs["audio"] = audio
    elif task is Task.AUDIO_VIDEO_CONTINUATION:
        k = int(rng.integers(1, g.video_grid[0]))
        frames = 1 + 4 * (k - 1)
        known = g.audio_frames * frames // (4 * (g.video_grid[0] - 1) + 1)  # the audio of those frames
        inputs["video"], inputs["audio"] = video[:k], audio[:max(1, known)]
        target_audio = audio
    elif task is Task.STYLIZATION:
        inputs["video"] = data["structure"][row]
    layout = builder.build(task, text_len=text_len_of(caption) if caption else 0, **inputs)
    target_video = video[:1] if task is Task.TEXT_TO_IMAGE else (None if task is Task.VIDEO_TO_AUDIO else video)
    out = output_ids(layout, target_video, target_audio, vocab)
    example = _example(layout, out, caption)
    if contrast is not None and task is Task.TEXT_TO_VIDEO and caption is not None:
        direction = str(contrast.choice([d for d in DIRECTIONS if d != a.direction]))
        swapped = phrase(replace(a, direction=direction), *phrasing)
        other = builder.build(task, text_len=text_len_of(swapped), **inputs)
        frame = int(np.prod(g.video_grid[1:]))
        visual = np.nonzero(example.low[layout.prefix_len:] == SPECIAL_RANGE)[0]  # sampled video, in order
        example.counterpart, example.compared = _example(other, out, swapped), visual[frame:3 * frame]
    elif contrast is not None and task is Task.VIDEO_TO_AUDIO:
        shape = data["attributes"][:, list(ATTRIBUTE_NAMES).index("shape")]
        other_row = int(contrast.choice(np.nonzero(shape != shape[row])[0]))
        other = builder.build(task, video=data["video"][other_row])
        example.counterpart = _example(other, out, None)
        example.compared = np.nonzero(example.high[layout.prefix_len:] > 0)[0][:CONTRAST_AUDIO_TOKENS]
    return example


def _example(layout: SequenceLayout, out: np.ndarray, caption: str | None) -> Example:
    """The Example of `layout`'s prefix followed by the output ids `out`."""
    ids = np.concatenate([layout.prefix, out])
    low = np.zeros(len(ids), np.int64)
    high = np.zeros(len(ids), np.int64)
    for j, (forced, lo, hi) in enumerate(layout.positions()):
        if forced < 0:
            low[layout.prefix_len + j], high[layout.prefix_len + j] = lo, hi
    return Example(layout, ids, caption, low, high)


def losses(model: DemoLM, examples: list[Example], text: TextCache, contrast_weight: float = 0.0,
           contrast_margin: float = 0.0) -> dict[str, torch.Tensor]:
    """Next-token cross-entropy over each sampled position's id range, averaged over positions,
    plus contrast_weight x the mean hinge of the examples with a counterpart (module docstring), each
    pair's divided by its compared tokens' count; their mean gap (nats) is logged as gap_<task>."""
    pairs = [(b, e) for b, e in enumerate(examples) if e.counterpart is not None]
    nll, take, visual = _token_losses(model, examples + [e.counterpart for _, e in pairs], text)
    B = len(examples)
    per, visual = nll[:B][take[:B]], visual[:B][take[:B]]
    out = {"loss": per.mean()}
    for name, where in (("video", visual), ("audio", ~visual)):  # a batch of one task may lack either
        if where.any():
            out[name] = per[where].detach().mean()
    if pairs and contrast_weight > 0:
        gaps, hinges = [], []
        for k, (b, e) in enumerate(pairs):  # position j's token is predicted at j - 1
            true = nll[b, torch.from_numpy(e.layout.prefix_len + e.compared - 1)].sum()
            swapped = nll[B + k, torch.from_numpy(e.counterpart.layout.prefix_len + e.compared - 1)].sum()
            gaps.append(swapped - true)
            hinges.append(F.relu(contrast_margin - gaps[-1]) / len(e.compared))
        out["loss"] = out["loss"] + contrast_weight * torch.stack(hinges).mean()
        out[f"gap_{examples[0].layout.task.value}"] = torch.stack(gaps).detach().mean()  # one task a batch
    return out


def _token_losses(model: DemoLM, examples: list[Example], text: TextCache):
    """Each position's cross-entropy over its id range [B, S-1] (column j - 1 holds position j's;
    0 where no loss is taken), where a loss is taken [B, S-1], and where the token is visual."""
    B, S = len(examples), max(len(e.ids) for e in examples)
    ids = torch.zeros(B, S, dtype=torch.long)
    low = torch.zeros(B, S, dtype=torch.long)
    high = torch.zeros(B, S, dtype=torch.long)
    hidden = torch.zeros(B, S, model.text_projection.in_features)
    embed_mask = torch.zeros(B, S, dtype=torch.bool)
    for b, e in enumerate(examples):  # right padding: a causal output position never reads it
        n = len(e.ids)
        ids[b, :n], low[b, :n], high[b, :n] = (torch.from_numpy(x) for x in (e.ids, e.low, e.high))
        if e.caption is not None:
            lay = e.layout
            hidden[b, lay.text_start:lay.text_start + lay.text_len] = text(e.caption)
            embed_mask[b, lay.text_start:lay.text_start + lay.text_len] = True
    prefix_lens = torch.tensor([e.layout.prefix_len for e in examples])
    embeds = model.text_projection(hidden)
    logits = model.llm(ids, prefix_lens, embeds, embed_mask).float()  # (B, S, V)
    take = high[:, 1:] > 0  # (B, S-1)
    rows = logits[:, :-1][take]  # (N, V)
    vocab = torch.arange(rows.shape[-1])
    allowed = (vocab >= low[:, 1:][take, None]) & (vocab < high[:, 1:][take, None])
    per = F.cross_entropy(rows.masked_fill(~allowed, float("-inf")), ids[:, 1:][take], reduction="none")
    nll = torch.zeros(B, S - 1, dtype=per.dtype).index_put((take,), per)  # differentiable scatter
    visual = low[:, 1:] == SPECIAL_RANGE  # the visual range starts right after the special ids
    return nll, take, visual


def train(model: DemoLM, recipe: LLMRecipe, work, data: dict[str, np.ndarray], builder: SequenceBuilder,
          text: TextCache, name: str = "llm") -> DemoLM:
    """Train `model` by `recipe`, resuming from work/<name>/."""
    model.text_projection.requires_grad_(recipe.train_projection)
    tasks = list(TASK_MIX)
    weights = np.array([TASK_MIX[t] for t in tasks])
    sparse_rows = np.nonzero(data["long_video"][:, 0, 0, 0] >= 0)[0]
    n = len(data["video"])

    def step_fn(step: int) -> dict[str, torch.Tensor]:
        rng = np.random.Generator(np.random.PCG64([recipe.seed, step]))
        contrast = np.random.Generator(np.random.PCG64([recipe.seed, step, 1])) if recipe.contrast_weight else None
        # one task per step: its sequences have nearly one length, so little of the batch is padding
        task = tasks[rng.choice(len(tasks), p=weights / weights.sum())]
        examples = []
        for _ in range(recipe.batch):
            row = int(rng.choice(sparse_rows)) if task in SPARSE else int(rng.integers(n))
            examples.append(make_example(task, row, data, builder, rng, recipe.text_dropout,
                                         lambda caption: len(text(caption)), contrast))
        return losses(model, examples, text, recipe.contrast_weight, recipe.contrast_margin)

    stage = Stage(name, model, Schedule(steps=recipe.steps, lr=recipe.lr, warmup=100, cycles=recipe.cycles), work)
    return stage.train(step_fn)
