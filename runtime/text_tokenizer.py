"""Prompt -> text token ids, with the text encoder's own tokenizer.json.

numpy + tokenizers only: the torch reference and the lean runtime tokenize
with this one class, so that both feed the text encoder the same ids.
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np


@dataclass
class TextTokens:
    """ids: [B, L] int64, padded with the tokenizer's pad id (0 when it has none);
    mask: [B, L] bool, True at real tokens. L = the longest prompt (at least 1)."""

    ids: np.ndarray
    mask: np.ndarray


class TextTokenizer:
    """A tokenizer.json (HuggingFace `tokenizers` format) limited to `max_tokens` ids per prompt,
    and (vocab_size given) to ids the text encoder embeds.

    Longer prompts are truncated with a warning, keeping their final special
    token ([SEP] or </s>) so the encoder still sees a well-formed sequence.
    """

    def __init__(self, path: str | Path, max_tokens: int, vocab_size: int | None = None):
        from tokenizers import Tokenizer

        path = Path(path)
        if not path.is_file():
            raise ValueError(f"tokenizer file {path} does not exist")
        try:
            self._tokenizer = Tokenizer.from_file(str(path))
        except Exception as error:  # tokenizers raises its own exception types
            raise ValueError(f"cannot read tokenizer {path}: {error}") from None
        self._tokenizer.no_padding()
        self._tokenizer.no_truncation()
        self.path = path
        self.max_tokens = max_tokens
        self.vocab_size = vocab_size  # the text encoder's: ids past it are refused
        padding = self._tokenizer.token_to_id("[PAD]")
        if padding is None:
            padding = self._tokenizer.token_to_id("<pad>")
        self.pad_id = padding or 0

    def tokenize(self, prompts: list[str]) -> TextTokens:
        if isinstance(prompts, str) or not all(isinstance(p, str) for p in prompts):
            raise ValueError("prompts must be a list of strings")
        encoded = [self._tokenizer.encode(p).ids for p in prompts]
        if self.vocab_size is not None:
            bad = max((i for ids in encoded for i in ids), default=0)
            if bad >= self.vocab_size:
                raise ValueError(f"{self.path} gave text id {bad}, outside the text encoder's vocabulary of "
                                 f"{self.vocab_size}: the tokenizer does not belong to this text encoder")
        for prompt, ids in zip(prompts, encoded):
            if len(ids) > self.max_tokens:
                warnings.warn(f"prompt of {len(ids)} text tokens truncated to {self.max_tokens}: {prompt[:40]!r}...",
                              stacklevel=2)
        encoded = [ids if len(ids) <= self.max_tokens else ids[:self.max_tokens - 1] + ids[-1:] for ids in encoded]
        length = max([1, *(len(ids) for ids in encoded)])
        out = np.full((len(encoded), length), self.pad_id, np.int64)
        mask = np.zeros((len(encoded), length), bool)
        for row, ids in enumerate(encoded):
            out[row, :len(ids)] = ids
            mask[row, :len(ids)] = True
        return TextTokens(ids=out, mask=mask)
