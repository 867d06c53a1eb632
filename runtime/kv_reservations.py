"""The paged LLM and its KV pool, shared by the runs in flight of one Pipeline.

A run (one generation or one stream) reserves the KV blocks it needs for its
whole length before its first step and releases them when it ends, so a run
never meets a full pool half-way. Invariants, kept under the pipeline's lock:
reserved <= the pool's num_blocks, and the pool is rebuilt (to the size a run
needs) only while nothing is reserved, so it grows to the largest request. A
run that starts with nothing else in flight lets the LLM drop the blocks above
the highest one still holding anything (PagedLLM.fit): decode calls read the
whole pool they are given.
"""

from __future__ import annotations

import threading

from vp.runtime.backends.base import Backend, PagedLLM
from vp.runtime.kv_cache import KVCacheManager


class KVReservations:
    """Reservations of KV blocks by the runs in flight; `lock` is the pipeline's (an RLock)."""

    def __init__(self, backend: Backend, block_size: int, lock: threading.RLock):
        self.backend = backend
        self.block_size = block_size
        self._space = threading.Condition(lock)
        self.reserved = 0
        self._holders: dict[int, int] = {}  # thread id -> runs in flight
        self.llm: PagedLLM | None = None
        self.manager: KVCacheManager | None = None

    def reserve(self, blocks: int) -> tuple[PagedLLM, KVCacheManager]:
        """Reserve `blocks` for a run of this thread (until release()); the LLM and manager it runs on.

        A run that does not fit waits for other threads' runs to finish or, when this thread
        holds one of the reservations (an unfinished stream), is refused: waiting would never end."""
        me = threading.get_ident()
        with self._space:
            while self.llm is None or self.llm.num_blocks - self.reserved < blocks:
                if not self.reserved:
                    self._rebuild(blocks)
                    break
                if self._holders.get(me):
                    raise ValueError(f"this request needs {blocks} KV blocks and an unfinished stream() of this "
                                     f"thread holds {self.reserved} of the pool's {self.llm.num_blocks}: "
                                     f"finish or close the stream first")
                self._space.wait()
            if not self.reserved:  # no run in flight: what the last runs left is the cached prefixes at most
                self.llm.fit(self.manager.highest_block() + 1)
            self.reserved += blocks
            self._holders[me] = self._holders.get(me, 0) + 1
            return self.llm, self.manager

    def release(self, blocks: int, holder: int) -> None:
        """End the reservation of `blocks` made by thread `holder`."""
        with self._space:
            self.reserved -= blocks
            self._holders[holder] -= 1
            if not self._holders[holder]:
                del self._holders[holder]
            self._space.notify_all()

    @property
    def pool_bytes(self) -> int:
        with self._space:
            return 0 if self.llm is None else self.llm.pool_bytes

    def close(self) -> None:
        with self._space:
            if self.llm is not None:
                self.llm.close()
            self.llm = self.manager = None

    def _rebuild(self, blocks: int) -> None:
        self.close()
        self.llm = self.backend.paged_llm(blocks)
        self.manager = KVCacheManager(blocks, self.block_size)
