"""The paged LLM graph under ONNX Runtime against the torch reference (tiny preset).

The ONNX graph is driven with a numpy block pool whose blocks are handed out
shuffled, so logical and physical block order never agree.
"""

import numpy as np
import onnxruntime as ort
import pytest
import torch

from vp.engines.manifest import Manifest
from vp.models.reference import generate
from vp.runtime.sampling import SamplingConfig, make_rng, sample_guided
from vp.runtime.text_tokenizer import TextTokenizer
from vp.runtime.layout import SequenceBuilder
from vp.runtime.vocab import Task

# fp32 graph vs fp32 torch: the same math, reassociated by the graph optimizer
LOGITS_ATOL = 1e-4
# fp16 graph (fp32 norms, softmax and logits) vs fp32 torch: measured 9.0e-4 on logits up to ~1.2
FP16_LOGITS_ATOL = 5e-3


class ScatteredPool:
    """A numpy KV pool [layers, 2, kv_heads, num_blocks, block_size, head_dim] handing out blocks in
    shuffled order, committing new_kv [layers, 2, kv_heads, B, T, head_dim] token by token."""

    def __init__(self, session, num_blocks=96, seed=0):
        spec = {i.name: i for i in session.get_inputs()}["k_pool.0"]
        kv_heads, _, self.block_size, head_dim = spec.shape
        layers = sum(i.name.startswith("k_pool.") for i in session.get_inputs())
        self.dtype = np.float16 if spec.type == "tensor(float16)" else np.float32
        self.pool = np.zeros((layers, 2, kv_heads, num_blocks, self.block_size, head_dim), self.dtype)
        self.free = list(np.random.default_rng(seed).permutation(num_blocks))
        self.session = session
        self.tables: list[list[int]] = []
        self.lens: list[int] = []
        self.prefix: list[int] = []

    def add(self, prefix_len: int) -> int:
        self.tables.append([])
        self.lens.append(0)
        self.prefix.append(prefix_len)
        return len(self.tables) - 1

    def run(self, seqs, ids, embeds=None, mask=None, head=0):
        """ids [B, T] for sequences `seqs` -> logits [B, head_width] of output head `head`; commits the
        new K/V."""
        ids = np.asarray(ids, np.int64)
        B, T = ids.shape
        for s in seqs:
            while len(self.tables[s]) * self.block_size < self.lens[s] + T:
                self.tables[s].append(int(self.free.pop()))
        width = max(len(self.tables[s]) for s in seqs)
        table = np.array([self.tables[s] + [0] * (width - len(self.tables[s])) for s in seqs], np.int64)
        ctx = np.array([self.lens[s] for s in seqs], np.int64)
        d = {i.name: i for i in self.session.get_inputs()}["input_embeds"].shape[2]
        feeds = dict(
            input_ids=ids,
            input_embeds=np.zeros((B, T, d), self.dtype) if embeds is None else embeds.astype(self.dtype),
            embed_mask=np.zeros((B, T), bool) if mask is None else mask,
            position_ids=ctx[:, None] + np.arange(T)[None],
            block_table=table, context_lens=ctx,
            prefix_lens=np.array([self.prefix[s] for s in seqs], np.int64),
            head=np.array([head], np.int64),
            **{f"{kv}_pool.{layer}": self.pool[layer, i] for layer in range(len(self.pool)) for i, kv in enumerate("kv")},
        )
        logits, new_kv = self.session.run(["logits", "new_kv"], feeds)
        for b, s in enumerate(seqs):
            for t in range(T):
                p = self.lens[s] + t
                self.pool[:, :, :, self.tables[s][p // self.block_size], p % self.block_size] = new_kv[:, :, :, b, t]
            self.lens[s] += T
        return logits


def llm_session(bundle):
    return ort.InferenceSession(str(bundle / "onnx" / "llm.onnx"), providers=["CPUExecutionProvider"])


@pytest.mark.parametrize("precision,atol", [("fp32", LOGITS_ATOL), ("fp16", FP16_LOGITS_ATOL)])
@torch.no_grad()
def test_paged_logits_match_full_forward(tiny_models, precision, atol, request):
    bundle = request.getfixturevalue("tiny_bundle" if precision == "fp32" else "tiny_bundle_fp16")
    llm = tiny_models.llm
    ids = torch.randint(0, llm.config.vocab_size, (1, 40), generator=torch.Generator().manual_seed(0))
    prefix_len = 12
    full = llm(ids, torch.tensor([prefix_len]))[0].numpy()
    pool = ScatteredPool(llm_session(bundle))
    seq = pool.add(prefix_len)
    heads = tiny_models.preset.vocab.heads()
    got = {prefix_len - 1: (0, pool.run([seq], ids[:, :prefix_len])[0])}
    got[19] = (1, pool.run([seq], ids[:, prefix_len:20], head=1)[0])  # a chunk of forced tokens
    for t in range(20, 40):  # the two heads in turn
        got[t] = (t % 2, pool.run([seq], ids[:, t:t + 1], head=t % 2)[0])
    worst = 0.0
    for p, (head, logits) in got.items():
        low, high = heads[head]
        worst = max(worst, np.abs(logits[:high - low] - full[p, low:high]).max())
        assert not logits[high - low:].any()  # the padding after a narrower head
    assert worst <= atol, worst


def test_greedy_tokens_match_reference(tiny_models, tiny_bundle):
    """Text encoder + LLM graphs, CFG branches batched in decode, 64 greedy tokens."""
    prompt, n = "a red fox runs through snow", 64
    sampling = SamplingConfig(temperature=0, top_p=1.0, cfg_scale=3.0)
    want = generate(tiny_models, task="t2v", prompt=prompt, seed=0, sampling=sampling).tokens[:n]

    manifest = Manifest.read(tiny_bundle)
    preset = tiny_models.preset
    text_ids = TextTokenizer(tiny_bundle / "tokenizer.json", preset.text_encoder.max_tokens).tokenize([prompt]).ids
    text_session = ort.InferenceSession(str(tiny_bundle / "onnx" / "text_encoder.onnx"),
                                        providers=["CPUExecutionProvider"])
    (text,) = text_session.run(None, {"text_ids": text_ids, "text_mask": np.ones_like(text_ids, bool)})
    builder = SequenceBuilder(preset.vocab, preset.geometry)
    cond = builder.build(Task.TEXT_TO_VIDEO, text_len=text_ids.shape[1], with_audio=True)
    uncond = builder.build(Task.TEXT_TO_VIDEO, text_len=0, with_audio=True)
    assert manifest.preset["name"] == "tiny"

    pool = ScatteredPool(llm_session(tiny_bundle), seed=1)
    a, b = pool.add(cond.prefix_len), pool.add(uncond.prefix_len)
    embeds = np.zeros((1, cond.prefix_len, preset.llm.d_model), np.float32)
    embeds[0, cond.text_mask()] = text[0]
    positions = cond.positions()[:n + 1]
    # each call computes the head of the position it predicts
    heads = [preset.vocab.head_of(low, high) if forced < 0 else 0 for forced, low, high in positions]
    logits = [pool.run([a], cond.prefix[None], embeds, cond.text_mask()[None], head=heads[0])[0],
              pool.run([b], uncond.prefix[None], head=heads[0])[0]]
    rng, out = make_rng(0), []
    for i, (forced, low, high) in enumerate(positions[:n]):
        if forced < 0:
            offset = preset.vocab.heads()[heads[i]][0]
            forced = offset + int(sample_guided(logits[0][None], logits[1][None], low=low - offset,
                                                high=high - offset, config=sampling, rngs=[rng])[0])
        out.append(forced)
        logits = list(pool.run([a, b], [[forced], [forced]], head=heads[i + 1]))
    np.testing.assert_array_equal(np.array(out), want)
