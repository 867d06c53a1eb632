"""The LLM loop of the runtime: prefill, then decode over the paged KV cache.

One generation runs N samples of one layout, each with its conditional branch
and (with classifier-free guidance) its unconditional branch: 2N sequences.
The conditional prefix is prefilled once and forked into N samples; so is the
unconditional one, so the N samples share their prefix blocks. Every output
position is then either forced by the layout (fed, never sampled) or drawn
from the CFG-mixed logits of its sample with that sample's own generator.
Runs of forced ids are fed in one call, like the torch reference.

Each call computes the logits of one output head (vp.runtime.vocab.Vocabulary.heads):
the head of the position it predicts. Ids are drawn in the head's columns and
shifted by the head's first id.

Calls respect the engine's optimization profiles: one new token per sequence
goes in decode calls of at most the decode profile's batch; several new tokens
(prefill, forced runs) in prefill calls of at most its batch.

Where the LLM keeps its logits on a GPU with a sampler graph beside it
(PagedLLM.device_sampler), a decode step that fits one call draws there: the
host sends each sample's uniform numbers and gets the ids back, and draws
itself only the rare row the graph leaves (vp.export.sampler_graph).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable, Hashable, Iterator
from dataclasses import dataclass, field

import numpy as np

from vp.runtime.backends.base import LLMBatch, PagedLLM
from vp.runtime.batch_block_table import BatchBlockTable
from vp.runtime.kv_cache import KVCacheManager, KVStats
from vp.runtime.sampling import DRAWS, SamplingConfig, graph_config, sample_guided
from vp.runtime.layout import SequenceLayout
from vp.runtime.vocab import Vocabulary


@dataclass
class Branch:
    """One prefix to run: a layout and the text embeddings [text_len, d_model] for its text slots."""

    layout: SequenceLayout
    text: np.ndarray | None


@dataclass
class LoopTimings:
    """prefill_ms / decode_ms: wall time in prefill and in feeding decoded tokens.
    Per feed after the prefill: step_ends (perf_counter() at its end), step_tokens (new
    tokens per sequence) and backend_ms (time inside the engine). vp bench derives the
    decode step time (TPOT, sampling included) and the runtime overhead from them."""

    prefill_ms: float = 0.0
    decode_ms: float = 0.0
    decode_steps: int = 0
    step_ends: list[float] = field(default_factory=list)
    step_tokens: list[int] = field(default_factory=list)
    backend_ms: list[float] = field(default_factory=list)


class TokenGenerator:
    """Generates output tokens with a PagedLLM and its KVCacheManager.

    decode_batch / prefill_batch: max sequences per call, from the engine profiles (decode:
    T = 1; prefill: T > 1). vocab: the LLM's, whose output heads the calls select.
    """

    def __init__(self, llm: PagedLLM, manager: KVCacheManager, d_model: int, decode_batch: int, prefill_batch: int,
                 vocab: Vocabulary):
        self.llm = llm
        self.vocab = vocab
        self.heads = vocab.heads()
        self.manager = manager
        self.d_model = d_model
        self.decode_batch = decode_batch
        self.prefill_batch = prefill_batch
        self.block_size = manager.block_size
        self.backend_ms = 0.0  # time inside llm.forward, accumulated

    @staticmethod
    def blocks_needed(layouts: list[SequenceLayout], num_samples: int, block_size: int) -> int:
        """Pool blocks for num_samples samples of each layout (no sharing assumed, +1 block each for copy-on-write)."""
        return sum(num_samples * (math.ceil(layout.total_len / block_size) + 1) for layout in layouts)

    def generate(
        self,
        branches: list[Branch],
        num_samples: int,
        sampling: SamplingConfig,
        rngs: list[np.random.Generator],
        timings: LoopTimings,
        clock: Callable[[], float],
        run: Hashable = 0,
    ) -> Iterator[np.ndarray]:
        """Yield the ids [num_samples] of each output position in order.

        branches: [conditional] or [conditional, unconditional] (CFG). Sequences
        are (run, branch, sample): runs with distinct `run` keys may share the
        manager. They are freed when the generator finishes or is closed.
        """
        layout = branches[0].layout
        seqs = [[(run, b, i) for i in range(num_samples)] for b in range(len(branches))]  # [branch][sample]
        capacity = max(math.ceil(branch.layout.total_len / self.block_size) for branch in branches)
        table = BatchBlockTable(self.manager, [seq for branch_seqs in seqs for seq in branch_seqs], capacity)
        try:
            positions = layout.positions()
            forced, low, high = positions[0]
            start = clock()
            head = self.vocab.head_of(low, high) if forced < 0 else 0  # the prefill predicts output position 0
            logits = [self._prefill(table, seqs[b], branch, head) for b, branch in enumerate(branches)]  # [branch] (N, W)
            timings.prefill_ms += (clock() - start) * 1e3
            pending = np.zeros((num_samples, 0), np.int64)
            for forced, low, high in positions:
                if forced >= 0:
                    ids = np.full(num_samples, forced, np.int64)
                else:
                    head = self.vocab.head_of(low, high)
                    if pending.shape[1]:
                        start = clock()
                        backend = self.backend_ms
                        logits = self._feed(table, seqs, pending, head)
                        end = clock()
                        timings.decode_ms += (end - start) * 1e3
                        timings.decode_steps += 1
                        timings.step_ends.append(end)
                        timings.step_tokens.append(pending.shape[1])
                        timings.backend_ms.append(self.backend_ms - backend)
                        pending = pending[:, :0]
                    offset = self.heads[head][0]  # ids are drawn in the head's columns
                    if logits is None:  # kept on the device
                        ids = self._draw_kept(num_samples, len(branches) > 1, low - offset, high - offset,
                                              sampling, rngs)
                    else:
                        ids = sample_guided(logits[0], logits[1] if len(branches) > 1 else None,
                                            low=low - offset, high=high - offset, config=sampling, rngs=rngs)
                    ids = ids + offset
                pending = np.concatenate([pending, ids[:, None]], axis=1)
                yield ids
        finally:
            self.stats = self.manager.stats()
            for branch_seqs in seqs:
                for seq in branch_seqs:
                    if seq in self.manager.tables:
                        self.manager.free(seq)

    def _prefill(self, table: BatchBlockTable, seqs: list, branch: Branch, head: int) -> np.ndarray:
        """Prefill the branch's prefix once (reusing cached blocks) into seqs[0], fork it to the
        other sequences of seqs; logits [N, W] of `head`."""
        layout = branch.layout
        key = b"" if branch.text is None else hashlib.sha256(np.ascontiguousarray(branch.text).tobytes()).digest()
        first = seqs[0]
        cached = self.manager.add_sequence(first, layout.prefix, extra_key=key)
        table.sync(first)
        embeds = np.zeros((1, layout.prefix_len, self.d_model), np.float32)
        if branch.text is not None:
            embeds[0, layout.text_start:layout.text_start + layout.text_len] = branch.text[:layout.text_len]
        new = slice(cached, layout.prefix_len)
        logits = self._call(table, [first], layout.prefix[None, new], embeds[:, new], layout.text_mask()[None, new],
                            prefix_lens=[layout.prefix_len], head=head)
        for seq in seqs[1:]:
            self.manager.fork(first, seq)
            table.sync(seq)
        return np.repeat(logits, len(seqs), axis=0)

    def _feed(self, table: BatchBlockTable, seqs, pending: np.ndarray, head: int) -> list[np.ndarray] | None:
        """Append pending [N, T] ids to every branch's sequences; per branch, logits [N, W] of `head`,
        or None where one decode call kept them on the device for _draw_kept."""
        flat = [seq for branch_seqs in seqs for seq in branch_seqs]
        ids = np.concatenate([pending] * len(seqs))  # (branches * N, T)
        T = ids.shape[1]
        step = self.decode_batch if T == 1 else self.prefill_batch
        keep = self.llm.device_sampler and T == 1 and len(flat) <= step
        prefix_lens = [self.manager.tables[s].prefix.size for s in flat]
        out = []
        for lo in range(0, len(flat), step):
            chunk = slice(lo, lo + step)
            embeds = np.zeros((len(flat[chunk]), T, self.d_model), np.float32)
            mask = np.zeros((len(flat[chunk]), T), bool)
            out.append(self._call(table, flat[chunk], ids[chunk], embeds, mask, prefix_lens[chunk], head, keep))
        if keep:
            return None
        logits = out[0] if len(out) == 1 else np.concatenate(out)
        n = pending.shape[0]
        return [logits[b * n:(b + 1) * n] for b in range(len(seqs))]

    def _call(self, table: BatchBlockTable, seqs, ids: np.ndarray, embeds: np.ndarray, embed_mask: np.ndarray,
              prefix_lens, head: int, keep: bool = False) -> np.ndarray | None:
        """One engine call over `seqs` (same T each): allocate slots, copy-on-write, run, commit; its
        logits of `head`, or None when `keep` leaves them on the device."""
        T = ids.shape[1]
        context = self.manager.context_lens(seqs)
        slots = []
        for seq in seqs:
            allocation = self.manager.allocate_slots(seq, T)
            for src, dst in allocation.copies:
                self.llm.copy_block(src, dst)
            table.sync(seq, allocation.first_changed)
            slots.append(allocation.slots)
        batch = LLMBatch(
            input_ids=np.ascontiguousarray(ids, np.int64),
            input_embeds=embeds,
            embed_mask=embed_mask,
            position_ids=context[:, None] + np.arange(T)[None],
            block_table=table.input(seqs, context),
            context_lens=context,
            prefix_lens=np.asarray(prefix_lens, np.int64),
            head=np.array([head], np.int64),
            slots=np.concatenate(slots).reshape(len(seqs), T),
        )
        start = time.perf_counter()
        logits = self.llm.forward_kept(batch) if keep else self.llm.forward(batch)
        self.backend_ms += (time.perf_counter() - start) * 1e3
        for seq, row in zip(seqs, ids):
            self.manager.commit(seq, row)
        return logits

    def _draw_kept(self, n: int, guided: bool, low: int, high: int, sampling: SamplingConfig,
                   rngs: list[np.random.Generator]) -> np.ndarray:
        """A position's ids [n] in the head's columns [low, high), drawn by the sampler graph from the
        logits the last call kept (n conditional rows, then n unconditional ones when guided); the
        host draws the rows it left, from the same uniform numbers, as if it had drawn them all."""
        greedy = sampling.temperature == 0  # draws nothing: the generators stay where they are
        uniforms = np.zeros((n, DRAWS)) if greedy else np.stack([rng.random(DRAWS) for rng in rngs])
        start = time.perf_counter()
        ids = self.llm.sample_kept(np.array([low, high], np.int64), uniforms.astype(np.float32),
                                   graph_config(sampling, guided))
        self.backend_ms += (time.perf_counter() - start) * 1e3
        left = np.flatnonzero(ids < 0)
        if left.size:
            logits = self.llm.kept_logits()
            ids[left] = sample_guided(logits[left], logits[n + left] if guided else None, low=low, high=high,
                                      config=sampling, rngs=[rngs[i] for i in left], uniforms=uniforms[left])
        return ids

    def kv_stats(self) -> KVStats:
        return self.stats
