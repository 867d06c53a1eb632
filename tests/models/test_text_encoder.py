"""Text encoder: vp's BERT and T5 encoders against transformers on the same weights,
tokenization limits, projection and padding, bad sources."""

import json
import shutil

import numpy as np
import pytest
import torch

from vp.models import TextEncoder, TextEncoderConfig
from vp.models.text_encoder import resolve_source

# the same fp32 math in a different order
PARITY_ATOL = 1e-4


@torch.no_grad()
def test_bert_matches_transformers_on_minilm_weights(tiny_models):
    from transformers import BertModel

    encoder = tiny_models.text_encoder
    reference = BertModel.from_pretrained(str(resolve_source("minilm")), add_pooling_layer=False).eval()
    tokens = encoder.tokenize(["a red fox runs through fresh snow at dawn", "a cat"])
    ids, mask = torch.from_numpy(tokens.ids), torch.from_numpy(tokens.mask)
    want = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    got = encoder.encoder(ids, mask)
    assert got.shape == (2, ids.shape[1], 384)
    torch.testing.assert_close(got[mask], want[mask], rtol=0, atol=PARITY_ATOL)


@pytest.mark.parametrize("feed_forward", ["relu", "gated-gelu"])
@torch.no_grad()
def test_t5_matches_transformers(tmp_path, feed_forward):
    """A small random T5 saved as a HuggingFace folder (+ a tokenizer.json) loads and matches."""
    from transformers import T5Config, T5EncoderModel

    torch.manual_seed(0)
    config = T5Config(vocab_size=30528, d_model=64, d_kv=16, d_ff=128, num_layers=2, num_heads=4,
                      feed_forward_proj=feed_forward, relative_attention_num_buckets=8,
                      relative_attention_max_distance=20)
    reference = T5EncoderModel(config).eval()
    reference.save_pretrained(str(tmp_path), safe_serialization=True)
    shutil.copyfile(resolve_source("minilm") / "tokenizer.json", tmp_path / "tokenizer.json")
    encoder = TextEncoder(TextEncoderConfig(source=str(tmp_path), width=32))
    assert encoder.hidden_size == 64
    tokens = encoder.tokenize(["a long prompt with more than twenty tokens so that far relative positions "
                               "fall into the logarithmic buckets of T5", "short"])
    ids, mask = torch.from_numpy(tokens.ids), torch.from_numpy(tokens.mask)
    assert ids.shape[1] > 20
    want = reference(input_ids=ids, attention_mask=mask.long()).last_hidden_state
    torch.testing.assert_close(encoder.encoder(ids, mask)[mask], want[mask], rtol=0, atol=PARITY_ATOL)


def test_embeddings_are_projected_and_zero_at_padding(tiny_models):
    text = tiny_models.text_encoder.encode(["a red fox in the snow", "fox"])
    assert text.embeddings.shape == (2, text.mask.shape[1], 128)
    assert text.embeddings.dtype == torch.float32
    assert torch.count_nonzero(text.embeddings[~text.mask]) == 0
    assert text.embeddings[text.mask].abs().sum(-1).min() > 0


def test_long_prompt_is_truncated_to_64_tokens_with_a_warning(tiny_models):
    encoder = tiny_models.text_encoder
    with pytest.warns(UserWarning, match="truncated to 64"):
        tokens = encoder.tokenize([" ".join(["fox"] * 100)])
    assert tokens.ids.shape == (1, 64)
    sep = encoder.tokenizer._tokenizer.token_to_id("[SEP]")
    assert tokens.ids[0, -1] == sep  # the end token survives truncation


def test_short_prompt_keeps_all_its_tokens(tiny_models):
    tokens = tiny_models.text_encoder.tokenize(["a red fox"])
    assert tokens.ids.shape == (1, 5) and tokens.mask.all()  # [CLS] a red fox [SEP]


def test_missing_source_files_are_named(tmp_path):
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    with pytest.raises(ValueError, match="lacks model.safetensors, tokenizer.json"):
        TextEncoder(TextEncoderConfig(source=str(tmp_path)))


def test_unsupported_model_type(tmp_path):
    folder = resolve_source("minilm")
    for name in ("model.safetensors", "tokenizer.json"):
        (tmp_path / name).symlink_to(folder / name)
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "gpt2"}))
    with pytest.raises(ValueError, match="model_type 'gpt2' is not supported"):
        TextEncoder(TextEncoderConfig(source=str(tmp_path)))


def test_forward_rejects_bad_ids(tiny_models):
    ids = torch.full((1, 4), 10**6)
    with pytest.raises(ValueError, match="text ids"):
        tiny_models.text_encoder(ids, torch.ones(1, 4, dtype=torch.bool))
    with pytest.raises(ValueError, match="bool"):
        tiny_models.text_encoder(torch.zeros(1, 4, dtype=torch.long), torch.ones(1, 4))


def test_tokenizer_is_torch_free_and_pads(tiny_models):
    from vp.runtime.text_tokenizer import TextTokenizer

    tokenizer = TextTokenizer(tiny_models.text_encoder.tokenizer_path, 64)
    tokens = tokenizer.tokenize(["a red fox", "a"])
    assert tokens.ids.dtype == np.int64 and tokens.mask.tolist() == [[True] * 5, [True] * 3 + [False] * 2]
    with pytest.raises(ValueError, match="list of strings"):
        tokenizer.tokenize("a red fox")
