"""The accuracy gate of a quantized LLM, against the fp32 model.

Teacher-forced: every held-out sequence runs through the quantized graph as the
runtime runs it (vp.runtime's OrtPagedLLM: one prefill of the prefix, then one
decode step per output token, each fed the true token), and through the fp32
torch model in one forward pass. At every sampled output position both
distributions are taken over the id range the position may emit (what the
sampler draws from): top-1 agreement of the next token, and the mean
KL(fp32 || quantized).

Generation: the demo evaluator's t2v rows (colour, direction, shape, pitch) on
the quantized bundle and on the fp32 torch reference (which equals the fp32
bundle row for row, docs/training.md), same prompts and seeds; each row within
`eval_points` percentage points.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import torch

from vp.calibration.data import Sequence
from vp.models.prefix_lm import PrefixLM
from vp.runtime.vocab import Vocabulary

EVAL_ROWS = ("t2v colour", "t2v direction", "t2v shape", "t2v pitch")


@dataclass(frozen=True, kw_only=True)
class GateThresholds:
    top1: float = 0.97
    kl: float = 0.05
    eval_points: float = 5.0
    positions: int = 256  # output positions teacher-forced per held-out sequence (the first ones)


def teacher_forced(reference: PrefixLM, llm, sequences: list[Sequence], thresholds: GateThresholds,
                   vocab: Vocabulary, progress: Callable[[int, int], None] | None = None) -> dict:
    """{"top1", "kl", "positions", "sequences"} of the quantized `llm` (a vp.runtime PagedLLM whose
    pool holds at least one sequence) against `reference`, over the ids each sampled position
    may emit (the LLM computes the logits of that range's head of `vocab`)."""
    from vp.runtime.backends.base import LLMBatch

    heads = vocab.heads()

    agree, kls = [], []
    block = llm.layout.block_size
    for index, s in enumerate(sequences):
        end = min(len(s.ids), s.prefix_len + thresholds.positions)
        table = np.arange(-(-end // block), dtype=np.int64)[None]
        with torch.no_grad():
            ref = reference(torch.from_numpy(s.ids[:end])[None], torch.tensor([s.prefix_len]),
                            torch.from_numpy(s.embeds[:end])[None], torch.from_numpy(s.embed_mask[:end])[None])[0]
        ref = ref.numpy()

        def call(start: int, stop: int) -> np.ndarray:
            """Logits of the head of position `stop` (the one the call predicts)."""
            head = vocab.head_of(s.low[stop], s.high[stop]) if stop < end and s.high[stop] > 0 else 0
            positions = np.arange(start, stop, dtype=np.int64)[None]
            return llm.forward(LLMBatch(
                input_ids=s.ids[None, start:stop], input_embeds=s.embeds[None, start:stop],
                embed_mask=s.embed_mask[None, start:stop], position_ids=positions, block_table=table,
                context_lens=np.array([start], np.int64), prefix_lens=np.array([s.prefix_len], np.int64),
                head=np.array([head], np.int64), slots=positions))[0]

        logits = call(0, s.prefix_len)  # predicts position prefix_len
        for j in range(s.prefix_len, end):
            if s.high[j] > 0:
                lo, hi = s.low[j], s.high[j]
                offset = heads[vocab.head_of(lo, hi)][0]
                p, q = _log_softmax(ref[j - 1, lo:hi]), _log_softmax(logits[lo - offset:hi - offset])
                agree.append(p.argmax() == q.argmax())
                kls.append(float((np.exp(p) * (p - q)).sum()))
            if j + 1 < end:
                logits = call(j, j + 1)
        if progress:
            progress(index + 1, len(sequences))
    return {"top1": float(np.mean(agree)), "kl": float(np.mean(kls)), "positions": len(agree),
            "sequences": len(sequences)}


def eval_rows(report) -> dict[str, float]:
    """The gate's rows of a vp.training.evaluator Report, in percent."""
    return {row: round(100 * report.scores[row], 1) for row in EVAL_ROWS}


def verdict(teacher: dict, evaluation: dict | None, thresholds: GateThresholds) -> dict:
    """The gate record: the figures, the thresholds, and passed (with why not)."""
    failures = []
    if teacher["top1"] < thresholds.top1:
        failures.append(f"top-1 agreement {teacher['top1']:.2%} < {thresholds.top1:.0%}")
    if teacher["kl"] > thresholds.kl:
        failures.append(f"mean KL {teacher['kl']:.4f} > {thresholds.kl}")
    if evaluation is not None:
        for row in EVAL_ROWS:
            gap = evaluation["quantized"][row] - evaluation["fp32"][row]
            if abs(gap) > thresholds.eval_points:
                failures.append(f"{row} {evaluation['quantized'][row]:.0f}% vs fp32 {evaluation['fp32'][row]:.0f}% "
                                f"(more than {thresholds.eval_points:g} points apart)")
    return {"teacher_forced": teacher, "evaluation": evaluation,
            "thresholds": {"top1": thresholds.top1, "kl": thresholds.kl, "eval_points": thresholds.eval_points},
            "passed": not failures, "failures": failures}


def _log_softmax(x: np.ndarray) -> np.ndarray:
    x = x.astype(np.float64)
    x = x - x.max()
    return x - np.log(np.exp(x).sum())
