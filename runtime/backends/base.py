"""The backend interface: load a component, describe it, run it.

A backend turns the bundle's graphs (ONNX Runtime) or engines (TensorRT) into
`Session`s. Callers speak numpy at the boundary: float inputs are cast to the
bundle's precision and float outputs come back as float32. The LLM is special:
its KV pool is caller-owned memory that lives where the backend computes
(`PagedLLM`): a numpy array for ONNX Runtime on a CPU, device memory for
TensorRT; the new K/V of each call go into it slot by slot without a host
round trip.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, fields

import numpy as np

from vp.engines.contract import DECODE, PREFILL, Contract, is_kv_plane
from vp.runtime.kv_pool import KVPoolLayout

_NUMPY = {"int64": np.int64, "bool": np.bool_, "float32": np.float32}


def numpy_dtype(spec_dtype: str, precision: str):
    """A contract dtype ("float" = the bundle's precision) as a numpy dtype."""
    if spec_dtype == "float":
        return np.float16 if precision == "fp16" else np.float32
    return _NUMPY[spec_dtype]


class Session(ABC):
    """One component, ready to run. `contract` names and shapes its tensors."""

    def __init__(self, contract: Contract, precision: str):
        self.contract = contract
        self.precision = precision
        self.input_dtypes = {s.name: numpy_dtype(s.dtype, precision) for s in contract.inputs}

    def run(self, **feeds: np.ndarray) -> list[np.ndarray]:
        """Inputs by contract name -> outputs in contract order (floats as float32)."""
        missing = [n for n in self.input_dtypes if n not in feeds]
        if missing:
            raise ValueError(f"{self.contract.component}: missing inputs {', '.join(missing)}")
        cast = {n: np.ascontiguousarray(feeds[n], dtype=t) for n, t in self.input_dtypes.items()}
        outputs = self._run(cast)
        return [o.astype(np.float32) if o.dtype == np.float16 else o for o in outputs]

    @abstractmethod
    def _run(self, feeds: dict[str, np.ndarray]) -> list[np.ndarray]: ...

    def close(self) -> None:
        """Release what the session holds (engines, device buffers)."""


@dataclass
class LLMBatch:
    """The LLM inputs of one call over B sequences with T new tokens each (see docs/engine-contract.md).

    Every field but `slots` is the contract input of the same name (the KV pool is the
    backend's own); head: [1] int64, the output head whose logits to compute (an index into
    Vocabulary.heads(): the head of the position the call predicts); slots: [B, T] int64, the
    pool slot (block * block_size + offset) of each new token, where forward() commits its K/V.
    """

    input_ids: np.ndarray
    input_embeds: np.ndarray
    embed_mask: np.ndarray
    position_ids: np.ndarray
    block_table: np.ndarray
    context_lens: np.ndarray
    prefix_lens: np.ndarray
    head: np.ndarray
    slots: np.ndarray

    def feeds(self) -> dict[str, np.ndarray]:
        """The engine inputs by contract name (all but the pool), contiguous."""
        return {name: np.ascontiguousarray(getattr(self, name)) for name in _FEEDS}


_FEEDS = tuple(f.name for f in fields(LLMBatch) if f.name != "slots")


class PagedLLM(ABC):
    """The LLM with its KV pool [layers, 2, kv_heads, num_blocks, block_size, head_dim] (vp.runtime.kv_pool).

    forward() runs one call and commits the new K/V into the pool at `slots`;
    copy_block() serves copy-on-write. Invariant: after forward() returns,
    every slot in `slots` holds its token's K/V.
    """

    def __init__(self, contract: Contract, precision: str, num_blocks: int):
        batch_inputs = {f.name for f in fields(LLMBatch)} - {"slots"}
        graph_inputs = {s.name for s in contract.inputs if not is_kv_plane(s.name)}
        if batch_inputs != graph_inputs:
            raise ValueError(f"the llm contract's inputs {sorted(graph_inputs)} are not the runtime's "
                             f"{sorted(batch_inputs)} (a bundle of another vp version?); re-export the bundle")
        self.contract = contract
        self.precision = precision
        self.prefill_profile = contract.profile_index(PREFILL)
        self.decode_profile = contract.profile_index(DECODE)
        self.decode_batch = contract.profiles[self.decode_profile].dims["batch"][2]
        self.layout = KVPoolLayout.from_contract(contract)
        self.num_blocks = num_blocks
        self.dtype = numpy_dtype("float", precision)
        self.embed_dtype = self.dtype

    @property
    def pool_bytes(self) -> int:
        """Bytes the pool holds now."""
        return self.num_blocks * self.layout.block_elements * np.dtype(self.dtype).itemsize

    def in_place(self, batch: LLMBatch) -> bool:
        """Whether the call runs in the decode profile, whose graph reads the pool's planes in place;
        a prefill-profile call is given its own past blocks (past_blocks) or, with no past, one empty
        block (vp.runtime.kv_pool)."""
        B, T = batch.input_ids.shape
        return T == 1 and B <= self.decode_batch

    def past_blocks(self, batch: LLMBatch) -> tuple[np.ndarray, np.ndarray]:
        """(blocks [n] int64, block_table [B, max_blocks] int64): the pool blocks that hold the batch's
        past, ascending, and the batch's block table renumbered into that list (padding: 0)."""
        held = np.arange(batch.block_table.shape[1])[None] < -(-batch.context_lens[:, None] // self.layout.block_size)
        blocks = np.unique(batch.block_table[held])
        return blocks, np.where(held, np.searchsorted(blocks, batch.block_table), 0).astype(np.int64)

    def device_planes(self, batch: LLMBatch, pool: int, empty: int, scratch: Callable[[int], int],
                      copy: Callable[[int, int, list], None]) -> tuple[dict[str, tuple[int, tuple]], np.ndarray]:
        """For a device backend: (plane input -> (address, shape), the block table to feed) of a call
        on the pool of num_blocks at address `pool`. A decode call reads the pool; a prefill call
        with a past reads its own blocks, gathered by copy(dst, src, copies) into scratch(nbytes)
        (an address valid until the call has run); one without reads the zeroed block at `empty`."""
        itemsize = np.dtype(self.dtype).itemsize
        if self.in_place(batch):
            base, held, table = pool, self.num_blocks, batch.block_table
        elif batch.context_lens.any():
            blocks, table = self.past_blocks(batch)
            base, held = scratch(len(blocks) * self.layout.block_elements * itemsize), len(blocks)
            copy(base, pool, self.layout.gather_copies(blocks, self.num_blocks, itemsize))
        else:
            return dict.fromkeys(self.layout.names, (empty, self.layout.plane_shape(1))), batch.block_table
        shape = self.layout.plane_shape(held)
        return {name: (address, shape) for name, address in self.layout.plane_addresses(base, held, itemsize).items()}, table

    @abstractmethod
    def forward(self, batch: LLMBatch) -> np.ndarray:
        """-> logits [B, vocab] float32 of each sequence's last new token."""

    @abstractmethod
    def copy_block(self, src: int, dst: int) -> None: ...

    def fit(self, blocks: int) -> None:
        """No block id >= blocks holds anything any more (between runs): a backend that gives its
        decode calls only the pool up to the highest block in use shrinks it to `blocks`."""

    # Backends whose logits live on a GPU may keep a decode call's logits there and draw from them with
    # the bundle's sampler graph (vp.export.sampler_graph): only the ids come back to the host.
    device_sampler = False

    def forward_kept(self, batch: LLMBatch) -> None:
        """forward(), its logits [B, vocab] kept where they were computed for sample_kept() and
        kept_logits(), until the next call (device_sampler only)."""
        raise NotImplementedError

    def sample_kept(self, window: np.ndarray, uniforms: np.ndarray, config: np.ndarray) -> np.ndarray:
        """The sampler graph over the kept logits (the sampler contract's window [2], uniforms [N, DRAWS],
        config [4]): ids [N] int64, -1 where the host must draw the row."""
        raise NotImplementedError

    def kept_logits(self) -> np.ndarray:
        """The kept logits [B, vocab] float32, copied to the host."""
        raise NotImplementedError

    def close(self) -> None:
        """Release the pool and the session."""


class Backend(ABC):
    """Opens the components of one bundle. on_gpu: whether its graphs compute in GPU memory."""

    name: str
    on_gpu: bool

    @abstractmethod
    def session(self, component: str) -> Session: ...

    @abstractmethod
    def paged_llm(self, num_blocks: int) -> PagedLLM: ...

    @abstractmethod
    def float_type(self, component: str) -> str:
        """"fp32" or "fp16": the float type of the graph this backend runs for `component`."""
