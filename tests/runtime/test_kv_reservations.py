"""KVReservations: the pool grows to the largest run only while idle; a run that does not fit waits
for other threads' runs, and is refused when its own thread holds the pool."""

import threading

import numpy as np
import pytest

from vp.runtime.kv_reservations import KVReservations


class _Pool:
    def __init__(self, num_blocks):
        self.num_blocks, self.pool_bytes, self.closed, self.fitted = num_blocks, num_blocks * 1024, False, []

    def fit(self, blocks):
        self.fitted.append(blocks)

    def close(self):
        self.closed = True


class _Backend:
    def __init__(self):
        self.pools = []

    def paged_llm(self, num_blocks):
        self.pools.append(_Pool(num_blocks))
        return self.pools[-1]


def test_the_pool_grows_only_while_nothing_is_reserved():
    backend = _Backend()
    kv = KVReservations(backend, 16, threading.RLock())
    llm, _ = kv.reserve(4)
    kv.release(4, threading.get_ident())
    assert kv.reserve(3)[0] is llm  # fits: the pool is kept
    kv.release(3, threading.get_ident())
    bigger, manager = kv.reserve(10)  # idle and too small: rebuilt to the need, the old one closed
    assert bigger.num_blocks == 10 and llm.closed and manager.block_size == 16
    assert kv.pool_bytes == 10 * 1024
    assert llm.fitted == [0, 0]  # each idle start: nothing in the pool holds anything


def test_an_idle_start_keeps_the_blocks_that_still_hold_something():
    """A run that starts alone lets the LLM drop the blocks above the highest one in use or cached;
    one that starts beside another run does not."""
    kv = KVReservations(_Backend(), 4, threading.RLock())
    llm, manager = kv.reserve(6)
    prompt = np.arange(9, dtype=np.int64)  # blocks 0 and 1 full (cached), 2 partial
    manager.add_sequence("a", prompt)
    manager.allocate_slots("a", 9)
    manager.commit("a", prompt)
    assert kv.reserve(0)[0] is llm and llm.fitted == [0]  # beside the first run: no fit
    kv.release(0, threading.get_ident())
    kv.release(6, threading.get_ident())
    manager.free("a")
    kv.reserve(6)
    assert llm.fitted == [0, 2]  # the cached prefix's blocks 0 and 1 are kept


def test_a_run_waits_for_another_threads_run_and_is_refused_by_its_own():
    kv = KVReservations(_Backend(), 16, threading.RLock())
    kv.reserve(8)  # this thread: an unfinished stream holding the whole pool
    with pytest.raises(ValueError, match="an unfinished stream\\(\\) of this thread holds 8 of the pool's 8"):
        kv.reserve(1)
    got = []
    waiter = threading.Thread(target=lambda: got.append(kv.reserve(2)))
    waiter.start()
    waiter.join(0.2)
    assert waiter.is_alive() and not got  # waits: the blocks are this thread's
    kv.release(8, threading.get_ident())
    waiter.join(5)
    assert got and kv.reserved == 2
