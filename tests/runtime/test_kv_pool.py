"""The KV pool layout: the numpy commit, and the strided copies device backends run, against the
layout's definition (slot s of sequence b, token t: pool[l, kv, h, s // bs, s % bs] = new_kv[l, kv, h, b, t])."""

import numpy as np
import pytest

from vp.runtime.kv_pool import Copy2D, KVPoolLayout

LAYOUT = KVPoolLayout(layers=3, kv_heads=2, block_size=4, head_dim=5)
NUM_BLOCKS = 7


def by_definition(pool, new_kv, slots):
    pool = pool.copy()
    for b, row in enumerate(slots):
        for t, s in enumerate(row):
            pool[:, :, :, s // LAYOUT.block_size, s % LAYOUT.block_size] = new_kv[:, :, :, b, t]
    return pool


def run_copies(dst: np.ndarray, src: np.ndarray, copies: list[Copy2D]) -> None:
    """What cudaMemcpy2D does with each copy, on host byte views of the two buffers."""
    dst_bytes, src_bytes = dst.reshape(-1).view(np.uint8), src.reshape(-1).view(np.uint8)
    for c in copies:
        assert c.width <= min(c.dst_pitch, c.src_pitch)  # rows of one copy never overlap
        for i in range(c.height):
            d, s = c.dst_offset + i * c.dst_pitch, c.src_offset + i * c.src_pitch
            dst_bytes[d:d + c.width] = src_bytes[s:s + c.width].copy()


# runs inside a block, across blocks, single slots, and two sequences' tokens in reverse block order
SLOTS = [np.array([[5]]), np.array([[2, 3, 4, 5, 6]]), np.array([[9, 10], [25, 26]]), np.array([[27], [0], [1]])]


@pytest.mark.parametrize("slots", SLOTS, ids=lambda s: str(s.tolist()))
@pytest.mark.parametrize("dtype", [np.float32, np.float16])
def test_commit_and_slot_copies_follow_the_definition(slots, dtype):
    gen = np.random.default_rng(0)
    pool = gen.normal(size=LAYOUT.shape(NUM_BLOCKS)).astype(dtype)
    B, T = slots.shape
    new_kv = gen.normal(size=(LAYOUT.layers, 2, LAYOUT.kv_heads, B, T, LAYOUT.head_dim)).astype(dtype)
    want = by_definition(pool, new_kv, slots)

    committed = pool.copy()
    LAYOUT.commit(committed, new_kv, slots)
    np.testing.assert_array_equal(committed, want)

    copied = pool.copy()
    copies = LAYOUT.slot_copies(slots, NUM_BLOCKS, np.dtype(dtype).itemsize)
    run_copies(copied, np.ascontiguousarray(new_kv), copies)
    np.testing.assert_array_equal(copied, want)
    runs = 1 + int(np.count_nonzero(np.diff(slots.reshape(-1)) != 1))
    assert len(copies) == runs  # one strided copy per run of consecutive slots, whatever the layer count


def test_block_copy_copies_every_plane():
    pool = np.random.default_rng(1).normal(size=LAYOUT.shape(NUM_BLOCKS)).astype(np.float32)
    want = pool.copy()
    want[:, :, :, 5] = pool[:, :, :, 2]
    copied = pool.copy()
    LAYOUT.copy_block(copied, 2, 5)
    np.testing.assert_array_equal(copied, want)
    on_device = pool.copy()
    run_copies(on_device, on_device, [LAYOUT.block_copy(2, 5, NUM_BLOCKS, 4)])
    np.testing.assert_array_equal(on_device, want)


def test_sizes_and_shapes():
    assert LAYOUT.block_elements == 3 * 2 * 2 * 4 * 5
    assert KVPoolLayout.from_shape((3, 2, 2, "num_blocks", 4, 5)) == LAYOUT
    with pytest.raises(ValueError, match=r"expected \[layers, 2, kv_heads, num_blocks, block_size, head_dim\]"):
        KVPoolLayout.from_shape(("num_blocks", 16, 3, 2, 2, 5))
