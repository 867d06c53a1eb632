"""KVReservations: the pool grows to the largest run only while idle; a run that does not fit waits
for other threads' runs, and is refused when its own thread holds the pool."""

import threading

import pytest

from vp.runtime.kv_reservations import KVReservations


class _Pool:
    def __init__(self, num_blocks):
        self.num_blocks, self.pool_bytes, self.closed = num_blocks, num_blocks * 1024, False

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
