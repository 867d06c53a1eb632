"""How much the LLM's prediction of a clip's latent frame depends on one caption word: the
teacher-forced loss under the true caption against the caption with that word swapped.

    python benchmarks/word_swap.py WORK/tokens.npz [--weights DIR] [--swap direction] [--latent-frame 1] [--rows 48]

For each of the first ROWS clips of a token dataset (`vp-train tokens`), the
text-to-video sequence of its true codes is scored by the LLM (torch, 1
thread) twice: with the clip's caption, and with the caption whose direction
(its opposite), colour (the next colour) or shape (the next shape) is swapped.
It prints the summed cross-entropy (nats) of the latent frame's 64 tokens under
both. A model that reads the word pays for the swap: colour costs tens of
nats, because every token of the object carries it. A direction swap that
costs well under a nat means the motion the tokens show is hardly bound to the
word (docs/training.md: 0.31 nats for round 3's LLM, 10.0 for a swapped colour).
"""

from __future__ import annotations

import argparse
from dataclasses import replace
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

from vp.models import load
from vp.models.presets import get_preset
from vp.runtime.layout import SequenceBuilder
from vp.runtime.vocab import Task
from vp.training.captions import TRAIN_TEMPLATES, caption
from vp.training.llm import TextCache, output_ids
from vp.training.tokens import attributes_of, load as load_tokens
from vp.training.world import COLOURS, SHAPES

OPPOSITE = {"left": "right", "right": "left", "up": "down", "down": "up"}


def swapped(a, attribute: str):
    """The attributes `a` with `attribute` changed to its opposite (direction) or the next value."""
    if attribute == "direction":
        return replace(a, direction=OPPOSITE[a.direction])
    values = list(COLOURS) if attribute == "colour" else list(SHAPES)
    return replace(a, **{attribute: values[(values.index(getattr(a, attribute)) + 1) % len(values)]})


@torch.no_grad()
def frame_loss(models, builder, text: TextCache, prompt: str, video, audio, frame: int) -> float:
    """Summed cross-entropy (nats) of latent frame `frame`'s tokens, teacher-forced, under `prompt`."""
    hidden = text(prompt)
    layout = builder.build(Task.TEXT_TO_VIDEO, text_len=len(hidden), with_audio=True)
    ids = np.concatenate([layout.prefix, output_ids(layout, video, audio, builder.vocab)])
    embeds = torch.zeros(1, len(ids), models.llm.config.d_model)
    mask = torch.zeros(1, len(ids), dtype=torch.bool)
    span = slice(layout.text_start, layout.text_start + layout.text_len)
    embeds[0, span], mask[0, span] = models.text_encoder.projection(hidden), True
    logits = models.llm(torch.from_numpy(ids)[None], torch.tensor([layout.prefix_len]), embeds, mask)[0]
    per_frame = video.shape[1] * video.shape[2]
    first = layout.prefix_len + 1 + frame * per_frame  # after <bov_o>
    where = np.arange(first, first + per_frame)
    low, high = builder.vocab.visual_range()
    rows = logits[where - 1, low:high]  # position j is predicted at j - 1; video ids only
    return float(F.cross_entropy(rows, torch.from_numpy(ids[where] - low), reduction="sum"))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("tokens", type=Path, help="a token dataset (vp-train tokens)")
    parser.add_argument("--weights", type=Path, default=None, help="a weights folder [default: the shipped demo]")
    parser.add_argument("--swap", choices=("direction", "colour", "shape"), default="direction")
    parser.add_argument("--latent-frame", type=int, default=1, help="0: the first frame; 1: frames 1-4; ...")
    parser.add_argument("--rows", type=int, default=48)
    args = parser.parse_args()
    torch.set_num_threads(1)
    models = load("demo", weights=args.weights)
    preset = get_preset("demo")
    builder = SequenceBuilder(preset.vocab, preset.geometry)
    data = load_tokens(args.tokens)
    text = TextCache(models.text_encoder)
    pairs = []
    for row in range(args.rows):
        a = attributes_of(data["attributes"][row])
        template = TRAIN_TEMPLATES[row % len(TRAIN_TEMPLATES)]
        video, audio = data["video"][row].astype(np.int64), data["audio"][row].astype(np.int64)
        pairs.append([frame_loss(models, builder, text, caption(b, template), video, audio, args.latent_frame)
                      for b in (a, swapped(a, args.swap))])
    losses = np.array(pairs)
    print(f"latent frame {args.latent_frame}, {args.swap} swapped, {len(losses)} clips: "
          f"{losses[:, 0].mean():.2f} nats with the true caption, {losses[:, 1].mean():.2f} swapped; "
          f"the true caption scores lower on {int((losses[:, 0] < losses[:, 1]).sum())}")


if __name__ == "__main__":
    main()
