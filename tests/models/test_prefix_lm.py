"""Prefix LM: the prefix-LM mask, cached decoding, text embeddings, bad input."""

import pytest
import torch

from vp.models.prefix_lm import KVCache, PrefixLM, PrefixLMConfig

CONFIG = PrefixLMConfig(vocab_size=300, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128,
                        max_seq_len=64)
# fp32 cached vs full forward: same math in another order
ATOL = 1e-5


@pytest.fixture(scope="module")
def model():
    torch.manual_seed(0)
    return PrefixLM(CONFIG).eval()


def ids_of(seed, length=16, batch=2):
    return torch.randint(0, CONFIG.vocab_size, (batch, length), generator=torch.Generator().manual_seed(seed))


@torch.no_grad()
def test_prefix_is_bidirectional_and_output_is_causal(model):
    ids, prefix_lens = ids_of(0), torch.tensor([8, 8])
    base = model(ids, prefix_lens)
    later_prefix = ids.clone()
    later_prefix[:, 6] = (later_prefix[:, 6] + 1) % CONFIG.vocab_size
    out = model(later_prefix, prefix_lens)
    # a later prefix token changes an earlier prefix position
    assert (out[:, 2] - base[:, 2]).abs().max() > 1e-3
    later_output = ids.clone()
    later_output[:, 11] = (later_output[:, 11] + 1) % CONFIG.vocab_size
    out = model(later_output, prefix_lens)
    # a later output token never changes an earlier position (prefix or output)
    torch.testing.assert_close(out[:, :11], base[:, :11], rtol=0, atol=0)
    assert (out[:, 11:] - base[:, 11:]).abs().max() > 1e-3


@torch.no_grad()
def test_causal_when_prefix_is_empty(model):
    ids = ids_of(1)
    base = model(ids, torch.tensor([0, 0]))
    changed = ids.clone()
    changed[:, 5] = (changed[:, 5] + 3) % CONFIG.vocab_size
    torch.testing.assert_close(model(changed, torch.tensor([0, 0]))[:, :5], base[:, :5], rtol=0, atol=0)


@torch.no_grad()
def test_cached_decoding_equals_full_forward(model):
    ids, prefix_lens = ids_of(2, length=20), torch.tensor([7, 7])
    embeds = torch.randn(2, 20, CONFIG.d_model)
    embed_mask = torch.zeros(2, 20, dtype=torch.bool)
    embed_mask[:, 2:5] = True  # text slots inside the prefix
    full = model(ids, prefix_lens, embeds, embed_mask)
    cache = KVCache(CONFIG, batch=2, max_len=32)
    steps = [model(ids[:, :7], prefix_lens, embeds[:, :7], embed_mask[:, :7], cache=cache)]
    steps.append(model(ids[:, 7:10], prefix_lens, cache=cache))  # a chunk of forced tokens
    steps += [model(ids[:, t:t + 1], prefix_lens, cache=cache) for t in range(10, 20)]
    torch.testing.assert_close(torch.cat(steps, dim=1), full, rtol=0, atol=ATOL)
    assert cache.length == 20


@torch.no_grad()
def test_embeddings_replace_token_ids_at_text_slots(model):
    ids, prefix_lens = ids_of(3), torch.tensor([6, 6])
    embeds = torch.randn(2, 16, CONFIG.d_model)
    mask = torch.zeros(2, 16, dtype=torch.bool)
    mask[:, 1:4] = True
    other_ids = ids.clone()
    other_ids[:, 1:4] = 0
    torch.testing.assert_close(model(ids, prefix_lens, embeds, mask), model(other_ids, prefix_lens, embeds, mask),
                               rtol=0, atol=0)


def test_grouped_query_attention_shapes(model):
    assert model.blocks[0].attn.wk.weight.shape == (CONFIG.n_kv_heads * CONFIG.head_dim, CONFIG.d_model)


@pytest.mark.parametrize("call, message", [
    (lambda m: m(ids_of(0) + 1000, torch.tensor([4, 4])), r"ids: values must lie in \[0, 300\)"),
    (lambda m: m(ids_of(0).float(), torch.tensor([4, 4])), "integer"),
    (lambda m: m(ids_of(0)[0], torch.tensor([4])), "expected 2 dims"),
    (lambda m: m(ids_of(0), torch.tensor([4])), "prefix_lens"),
    (lambda m: m(ids_of(0, length=65), torch.tensor([4, 4])), "exceeds the limit of 64"),
    (lambda m: m(ids_of(0), torch.tensor([4, 4]), embeds=torch.zeros(2, 16, 64)), "come together"),
])
def test_bad_input(model, call, message):
    with pytest.raises(ValueError, match=message):
        call(model)


def test_bad_config():
    with pytest.raises(ValueError, match="not divisible"):
        PrefixLMConfig(vocab_size=10, d_model=64, n_layers=1, n_heads=4, n_kv_heads=3, mlp_hidden=8)
