"""The KV pool layout: the numpy commit, and the strided copies device backends run, against the
layout's definition (slot s of sequence b, token t: pool[l, kv, h, s // bs, s % bs] = new_kv[l, kv, h, b, t])."""

import numpy as np
import pytest

from vp.engines.contract import Contract, TensorSpec, kv_planes
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


@pytest.mark.parametrize("blocks", [[4], [1, 2, 3], [0, 2, 3, 6]])
def test_gather_copies_gather_a_prefills_past(blocks):
    """A prefill's past blocks, copied out of the pool on a device: what numpy's fancy index gives."""
    pool = np.random.default_rng(2).normal(size=LAYOUT.shape(NUM_BLOCKS)).astype(np.float32)
    gathered = np.zeros(LAYOUT.shape(len(blocks)), np.float32)
    copies = LAYOUT.gather_copies(np.array(blocks), NUM_BLOCKS, 4)
    run_copies(gathered, pool, copies)
    np.testing.assert_array_equal(gathered, pool[:, :, :, blocks])
    assert len(copies) == 1 + int(np.count_nonzero(np.diff(blocks) != 1))  # one per run of consecutive blocks


def _contract(names):
    plane = (2, "num_blocks", 4, 5)
    return Contract("llm", tuple(TensorSpec(name, "float", plane, "") for name in names), (), ())


def test_sizes_and_shapes():
    assert LAYOUT.block_elements == 3 * 2 * 2 * 4 * 5
    assert KVPoolLayout.from_contract(_contract(kv_planes(3))) == LAYOUT
    assert LAYOUT.names == ("k_pool.0", "v_pool.0", "k_pool.1", "v_pool.1", "k_pool.2", "v_pool.2")
    with pytest.raises(ValueError, match=r"not one K and one V plane per layer .* re-export the bundle"):
        KVPoolLayout.from_contract(_contract(["k_pool.0", "v_pool.0", "k_pool.1"]))


def test_planes_are_the_pool_in_place():
    """The graph's plane inputs are views (numpy) or addresses (device) of the one pool, in its order."""
    pool = np.zeros(LAYOUT.shape(NUM_BLOCKS), np.float32)
    views = LAYOUT.plane_views(pool)
    addresses = LAYOUT.plane_addresses(pool.ctypes.data, NUM_BLOCKS, pool.itemsize)
    for layer in range(3):
        for kv, name in enumerate((f"k_pool.{layer}", f"v_pool.{layer}")):
            view = views[name]
            assert view.shape == LAYOUT.plane_shape(NUM_BLOCKS) and view.flags.c_contiguous
            assert np.shares_memory(view, pool) and view.ctypes.data == addresses[name]
            pool[layer, kv, 1, 3, 2] = 10 * layer + kv + 1
            assert view[1, 3, 2, 0] == 10 * layer + kv + 1
    assert all(p.shape == LAYOUT.plane_shape(1) and not p.any() for p in LAYOUT.empty_planes(np.float32).values())
