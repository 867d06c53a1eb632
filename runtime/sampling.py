"""Token sampling shared by the torch reference and the lean runtime.

numpy only, so that a seeded reference run and a seeded runtime run draw the
same tokens from the same logits: both call `sample` with one
`numpy.random.Generator` per sample, made by `make_rng(seed)`.

The paper leaves temperature, top-k, top-p and the LLM's CFG scale open; the
defaults below are vp's choice and travel in each bundle's manifest, as a
model's SamplingDefaults: one SamplingConfig, and per-task overrides of it
where a task reads best otherwise (the demo's stylization at a lower guidance
scale than its text-to-video, docs/training.md).
"""

from __future__ import annotations

import itertools
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field, fields, replace

import numpy as np

from vp.runtime.vocab import Task


@dataclass(frozen=True, kw_only=True)
class SamplingConfig:
    """How the next token is drawn.

    temperature: 0 means greedy (argmax), otherwise logits are divided by it.
    top_k: keep the k most likely ids (0 = no limit).
    top_p: keep the smallest set of ids whose probability reaches p (1.0 = all).
    cfg_scale: classifier-free guidance, logits = uncond + s * (cond - uncond);
        1.0 means no guidance (the unconditional branch is not run).
    """

    temperature: float = 1.0
    top_k: int = 0
    top_p: float = 0.9
    cfg_scale: float = 3.0

    def __post_init__(self) -> None:
        for name in ("temperature", "top_p", "cfg_scale"):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)) \
                    or not np.isfinite(value):
                raise ValueError(f"{name} must be a finite number, got {value!r}")
            object.__setattr__(self, name, float(value))
        if isinstance(self.top_k, bool) or not isinstance(self.top_k, (int, np.integer)):
            raise ValueError(f"top_k must be a whole number (0 = off), got {self.top_k!r}")
        object.__setattr__(self, "top_k", int(self.top_k))
        if not self.temperature >= 0:
            raise ValueError(f"temperature must be >= 0, got {self.temperature}")
        if self.top_k < 0:
            raise ValueError(f"top_k must be >= 0 (0 = off), got {self.top_k}")
        if not 0 < self.top_p <= 1:
            raise ValueError(f"top_p must lie in (0, 1], got {self.top_p}")
        if not self.cfg_scale >= 0:
            raise ValueError(f"cfg_scale must be >= 0, got {self.cfg_scale}")

    @property
    def guided(self) -> bool:
        return self.cfg_scale != 1.0

    def to_dict(self) -> dict:
        return asdict(self)


@dataclass(frozen=True)
class SamplingDefaults:
    """A model's sampling defaults: `base` for every task, and per task (a Task value: "t2v",
    "stylize", ...) overrides of some of its fields, e.g. {"stylize": {"cfg_scale": 1.0}}.

    The manifest form (to_dict / from_dict) is base's fields with the overrides under "tasks",
    so a manifest without "tasks" reads as it did before overrides existed.
    """

    base: SamplingConfig = field(default_factory=SamplingConfig)
    tasks: Mapping[str, Mapping[str, float]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        known = {t.value for t in Task}
        unknown = sorted(set(self.tasks) - known)
        if unknown:
            raise ValueError(f"tasks: unknown task(s) {unknown} (known: {', '.join(sorted(known))})")
        object.__setattr__(self, "tasks", {t: dict(self.tasks[t]) for t in sorted(self.tasks)})
        for task in self.tasks:
            self.for_task(task)  # every override names a field and gives it a valid value

    def for_task(self, task: str) -> SamplingConfig:
        """The defaults of `task` (a Task or its value): base with the task's overrides."""
        task = getattr(task, "value", task)
        overrides = self.tasks.get(task, {})
        names = {f.name for f in fields(SamplingConfig)}
        unknown = sorted(set(overrides) - names)
        if unknown:
            raise ValueError(f"tasks: {task} has unknown keys {unknown} (known: {', '.join(sorted(names))})")
        try:
            return replace(self.base, **overrides)
        except ValueError as error:
            raise ValueError(f"tasks: {task}: {error}") from None

    def to_dict(self) -> dict:
        return {**self.base.to_dict(), "tasks": {t: dict(o) for t, o in self.tasks.items()}}

    @classmethod
    def from_dict(cls, values: Mapping) -> SamplingDefaults:
        """The manifest form back; ValueError naming unknown keys or bad values."""
        values = dict(values)
        tasks = values.pop("tasks", {})
        known = {f.name for f in fields(SamplingConfig)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ValueError(f"unknown keys {unknown} (known: {', '.join(sorted(known | {'tasks'}))})")
        if not isinstance(tasks, Mapping) or not all(isinstance(o, Mapping) for o in tasks.values()):
            raise ValueError("tasks must map a task to its overrides, e.g. {'stylize': {'cfg_scale': 1.0}}, "
                             f"got {tasks!r}")
        return cls(SamplingConfig(**values), tasks)


def make_rng(seed: int) -> np.random.Generator:
    """The one generator both the reference and the runtime draw from."""
    return np.random.Generator(np.random.PCG64(seed))


def cfg_mix(cond: np.ndarray, uncond: np.ndarray, scale: float) -> np.ndarray:
    """Classifier-free guidance: uncond + scale * (cond - uncond), in float32 (rows mix independently)."""
    cond = np.asarray(cond, np.float32)
    if scale == 1.0:
        return cond
    mixed = np.subtract(cond, uncond, dtype=np.float32)
    mixed *= np.float32(scale)
    mixed += uncond  # the same float32 operations as uncond + scale * (cond - uncond), one buffer
    return mixed


def sample(
    logits: np.ndarray,
    *,
    low: int,
    high: int,
    config: SamplingConfig,
    rngs: Sequence[np.random.Generator],
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """Draw one id per row from `logits` restricted to the ids [low, high), row i with rngs[i].

    logits: [B, V] float (a view of the window is taken, never a copy of V).
    Returns ids: [B] int64, every one in [low, high). The restriction is how the
    layout keeps visual ids inside the video block and each audio level inside
    its own range.

    Greedy (temperature 0) is the first argmax. Otherwise, in float32: scale by
    log2(e) / temperature, raise 2 to it against the row max (numpy's exp2 is
    about 3x faster than its exp; the scaled logit's rounding moves a weight by
    at most ~4e-6 of itself; an id less likely than about e^-87 of the max
    underflows to 0 and is never drawn), and draw by
    rejection, never sorting (the kept set of top-k / top-p is a threshold on
    the probability, found from the draws themselves):

    - the kept set K: the ids i for which fewer than top_k ids are more likely
      (top_k > 0) and the mass of the ids more likely than i is below top_p
      (ids tied at the boundary are all kept);
    - with top_k, the draws start from the top-k set: the ids at least as
      likely as the k-th most likely (a partition of the window);
    - draw j from the row restricted to the ids above the pivot (at first all)
      by inverse CDF in id order (one uniform number; block sums, then one
      block); j is in K -> accept. Otherwise every id at most as likely as j is
      outside K too: the pivot rises to p_j and the row draws again.

    This draws from the distribution restricted to K exactly; a draw is
    accepted with probability >= top_p, so a row takes about 1 / top_p draws.
    Each row takes DRAWS uniform numbers from its generator up front and uses
    them in order (then one more at a time in the rare row that needs more):
    a generator advances the same way wherever the draws happen, so the GPU's
    sampler graph (vp.export.sampler_graph: DRAWS rounds, the same uniforms
    from the host) draws what the host would.
    A row costs five passes over the window (scale, max, subtract, exp2, block sums),
    a partition with top_k, and two per draw (compare into a 0/1 mask, dot); no sort,
    no cumulative sum of it.
    Rows go one at a time through one [W] buffer, so their passes stay in cache.

    uniforms: [B, DRAWS], the rows' first uniform numbers when the generators
    already gave them (a row the sampler graph left to the host); None: drawn here.
    """
    logits = np.asarray(logits)
    if logits.ndim != 2:
        raise ValueError(f"logits [B, V]: expected 2 dims, got shape {logits.shape}")
    if not 0 <= low < high <= logits.shape[1]:
        raise ValueError(f"id range [{low}, {high}) does not fit a vocabulary of {logits.shape[1]}")
    if len(rngs) != logits.shape[0]:
        raise ValueError(f"{logits.shape[0]} rows of logits need as many generators, got {len(rngs)}")
    window = logits[:, low:high]  # (B, W), a view
    if config.temperature == 0:
        return window.argmax(axis=1).astype(np.int64) + low
    # one row at a time through one buffer: a row's passes stay in cache, where a [B, W] temporary
    # would not (4 rows of 2^18 ids: 4 MB)
    weights = np.empty(window.shape[1], np.float32)
    scale = np.float32(_LOG2_E / config.temperature)  # e^(x / t) = 2^(x * log2(e) / t)
    ids = np.empty(len(window), np.int64)
    for i, (row, rng) in enumerate(zip(window, rngs)):
        np.multiply(row, scale, out=weights, dtype=np.float32)
        weights -= weights.max()
        np.exp2(weights, out=weights)  # [W] in [0, 1], 1 at the row's max
        ids[i] = _draw(weights, config, rng.random(DRAWS) if uniforms is None else uniforms[i], rng)
    return ids + low


def sample_guided(
    cond: np.ndarray,
    uncond: np.ndarray | None,
    *,
    low: int,
    high: int,
    config: SamplingConfig,
    rngs: Sequence[np.random.Generator],
    uniforms: np.ndarray | None = None,
) -> np.ndarray:
    """`sample` from the CFG mix of cond and uncond [B, V] at config.cfg_scale, mixed over the id
    range [low, high) only; uncond None: no guidance. ids [B] int64."""
    if uncond is None or not config.guided:
        return sample(cond, low=low, high=high, config=config, rngs=rngs, uniforms=uniforms)
    mixed = cfg_mix(np.asarray(cond)[:, low:high], np.asarray(uncond)[:, low:high], config.cfg_scale)
    return sample(mixed, low=0, high=high - low, config=config, rngs=rngs, uniforms=uniforms) + low


DRAWS = 4  # uniform numbers a row takes per step: rejected 4 times in a row with probability <= (1 - top_p)^4
_BLOCK = 1024  # ids per block of the inverse-CDF draw
_LOG2_E = float(np.log2(np.e))
_ONES = np.ones(_BLOCK, np.float32)


def graph_config(config: SamplingConfig, guided: bool) -> np.ndarray:
    """The sampler graph's config input [4] float32: 1 / temperature (0 = greedy), top_k, top_p and the CFG
    scale (1 without an unconditional branch)."""
    scale = 0.0 if config.temperature == 0 else 1.0 / config.temperature
    return np.array([scale, config.top_k, config.top_p, config.cfg_scale if guided else 1.0], np.float32)


def _draw(weights: np.ndarray, config: SamplingConfig, uniforms: np.ndarray, rng: np.random.Generator) -> int:
    """One id from the unnormalized probabilities `weights` [W] float32, restricted to the kept set; the
    n-th draw uses uniforms[n], past them the generator's next number."""
    blocks = _block_sums(weights)
    mass = float(blocks[-1]) * config.top_p  # of the whole window
    if 0 < config.top_k < weights.size:  # the top-k set: ids at least as likely as the k-th (ties kept)
        kth = np.partition(weights, weights.size - config.top_k)[weights.size - config.top_k]
        weights = np.where(weights >= kth, weights, np.float32(0))
        blocks = _block_sums(weights)
    above = np.empty(weights.shape, np.float32)  # 1 where an id is more likely than the draw, else 0
    pivot = None  # draws come from the ids with weight > pivot
    for n in itertools.count():
        u = uniforms[n] if n < len(uniforms) else rng.random()
        if pivot is None:
            j = _inverse_cdf(weights, blocks, u)
        else:
            kept = np.where(weights > pivot, weights, np.float32(0))
            j = _inverse_cdf(kept, _block_sums(kept), u)
        if config.top_p >= 1.0:  # j is in the top-k set
            return j
        # the mass of the ids more likely than j: a compare cast to float32 in cache-sized chunks, then a dot
        # (over a dense mask, cheaper than a masked reduction or a bool mask and its conversion: docs/benchmarks.md)
        np.greater(weights, weights[j], out=above, casting="unsafe")
        if float(np.dot(weights, above)) < mass:
            return j
        pivot = weights[j]


def _block_sums(weights: np.ndarray) -> np.ndarray:
    """The cumulative sums of `weights` [W] over blocks of _BLOCK ids, in float64 [ceil(W / _BLOCK)]."""
    whole = weights.size // _BLOCK * _BLOCK
    sums = weights[:whole].reshape(-1, _BLOCK) @ _ONES  # a matrix-vector product: 3-4x a row-wise sum
    if whole < weights.size:
        sums = np.append(sums, weights[whole:].sum(dtype=np.float32))
    return np.cumsum(sums, dtype=np.float64)


def _inverse_cdf(weights: np.ndarray, blocks: np.ndarray, u: float) -> int:
    """The id j (weights[j] > 0) where the uniform number u falls on the cumulative weights, in id order
    (blocks: their _block_sums)."""
    target = u * blocks[-1]
    b = min(int(np.searchsorted(blocks, target, side="right")), len(blocks) - 1)
    inside = weights[b * _BLOCK:(b + 1) * _BLOCK]
    cum = np.cumsum(inside, dtype=np.float64) + (blocks[b - 1] if b else 0.0)
    i = min(int(np.searchsorted(cum, target, side="right")), inside.size - 1)
    if inside[i] == 0:  # rounding ran past the last id with weight in the block: take that id
        i = int(np.flatnonzero(inside)[-1])
    return b * _BLOCK + i
