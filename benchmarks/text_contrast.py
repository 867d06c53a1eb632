"""How far apart the text conditioning holds captions that differ in one word, before and after
the learned projection: what the LLM can tell apart.

    python benchmarks/text_contrast.py [--weights DIR]

For each pair of captions that differ in one word (left/right, up/down,
left/up, two colours, two shapes), the frozen text encoder's hidden state at
that word and the projected embedding the LLM reads there are compared: the
distance between the two captions' vectors over the first caption's norm. A
projection that keeps what the LLM needs keeps these ratios; one that squashes
a pair leaves the LLM a word it can hardly read (docs/training.md: the
projection round 1 left keeps about a third of left/right's and up/down's
contrast, three quarters of left/up's; 800 steps that trained it again hardly
changed that).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch

from vp.models import load
from vp.training.llm import TextCache

PAIRS = (("a red circle moving left", "a red circle moving right"),
         ("a red circle moving up", "a red circle moving down"),
         ("a red circle moving left", "a red circle moving up"),
         ("a red circle moving left", "a green circle moving left"),
         ("a red circle moving left", "a red square moving left"))


def contrast(a: str, b: str, text: TextCache, projection: torch.nn.Module) -> tuple[float, float]:
    """(encoder, projected) relative distance of captions a and b at the token where they differ most."""
    ha, hb = text(a), text(b)
    if ha.shape != hb.shape:
        raise ValueError(f"{a!r} and {b!r} tokenize to different lengths")
    at = int((ha - hb).norm(dim=1).argmax())
    with torch.no_grad():
        pa, pb = projection(ha[at]), projection(hb[at])
    return float((ha[at] - hb[at]).norm() / ha[at].norm()), float((pa - pb).norm() / pa.norm())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--weights", type=Path, default=None, help="a weights folder [default: the shipped demo]")
    args = parser.parse_args()
    models = load("demo", weights=args.weights)
    text = TextCache(models.text_encoder)
    print("| captions | encoder | projected |\n|---|---|---|")
    for a, b in PAIRS:
        hidden, projected = contrast(a, b, text, models.text_encoder.projection)
        print(f"| {a} / {b} | {hidden:.2f} | {projected:.2f} |")


if __name__ == "__main__":
    main()
