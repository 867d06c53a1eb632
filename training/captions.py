"""Captions of demo clips: several phrasings of one clip's attributes.

Some phrasings (HELD_OUT_TEMPLATES) never appear in training;
the evaluator's held-out prompts use them, so a score measures whether the
model reads the attributes through the text encoder, not a memorised string.

    caption(attributes, template)   one phrasing
    training_phrasing(attributes, rng)   a random training template and shape word
    training_caption(attributes, rng)   a random training phrasing
"""

from __future__ import annotations

import numpy as np

from vp.training.world import Attributes

# {size} {colour} {shape} {direction}; {shape} takes a synonym, {direction} a phrase per template
TRAIN_TEMPLATES = (
    "a {colour} {shape} moving {dir}",
    "a {size} {colour} {shape} moving {dir}",
    "a {size} {colour} {shape} slides to the {dir}",
    "a {colour} {shape} going {dir}",
    "a {colour} {shape} heading {dir}, {speed}",
    "the {colour} {shape} travels {dir}",
)
HELD_OUT_TEMPLATES = (
    "a {size} {colour} {shape} drifting {dir}",
    "one {colour} {shape} that moves {dir}",
)
SHAPE_WORDS = {"circle": ("circle", "ball", "disc"), "square": ("square", "box", "block"),
               "triangle": ("triangle", "pyramid", "wedge")}
SPEED_WORDS = {"slow": "slowly", "fast": "quickly"}
SIZE_WORDS = {"small": "small", "large": "big"}


def caption(a: Attributes, template: str, shape_word: str | None = None) -> str:
    """The caption of `a` in `template` (a TRAIN or HELD_OUT template)."""
    return template.format(colour=a.colour, shape=shape_word or a.shape, dir=a.direction,
                           size=SIZE_WORDS[a.size], speed=SPEED_WORDS[a.speed])


def training_phrasing(a: Attributes, rng: np.random.Generator) -> tuple[str, str]:
    """A random training template and a random synonym of `a`'s shape (caption's arguments)."""
    template = TRAIN_TEMPLATES[rng.integers(len(TRAIN_TEMPLATES))]
    words = SHAPE_WORDS[a.shape]
    return template, words[rng.integers(len(words))]


def training_caption(a: Attributes, rng: np.random.Generator) -> str:
    """A random training phrasing of `a`, with a random shape synonym."""
    return caption(a, *training_phrasing(a, rng))
