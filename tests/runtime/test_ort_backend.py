"""The ONNX Runtime backend's paged LLM on the CPU: its pool holds the blocks up to the highest one
a call names and grows keeping what was committed; where a sequence's blocks lie in the pool does not
change its logits (the graph masks every slot but the sequence's past)."""

import numpy as np

from vp.runtime.backends import open_backend
from vp.runtime.backends.base import LLMBatch
from vp.runtime.bundle import Bundle

# the same sums in another order (masked slots add exact zeros at other places of the softmax)
ATOL = 1e-5


def _batch(d_model, blocks, context, tokens, head):
    positions = np.arange(context, context + tokens)
    return LLMBatch(input_ids=(positions * 7 % 200 + 5)[None], input_embeds=np.zeros((1, tokens, d_model), np.float32),
                    embed_mask=np.zeros((1, tokens), bool), position_ids=positions[None],
                    block_table=np.array([blocks[:max(1, -(-context // 16))]]), context_lens=np.array([context]),
                    prefix_lens=np.array([6]), head=np.array([head]),
                    slots=np.array([[blocks[p // 16] * 16 + p % 16 for p in positions]]))


def test_the_pool_grows_to_the_blocks_named_and_their_place_does_not_matter(tiny_bundle):
    bundle = Bundle.open(tiny_bundle)
    backend, _ = open_backend("ort", bundle)
    d = bundle.manifest.preset["llm"]["d_model"]
    front, scattered = backend.paged_llm(num_blocks=40), backend.paged_llm(num_blocks=40)
    placed = {front: [0, 1, 2], scattered: [37, 12, 25]}
    try:
        context = 0
        for call, tokens in enumerate((20, 1, 1, 1, 9, 1, 1)):  # a prefill, decode steps, a chunk with a past
            got = {llm: llm.forward(_batch(d, blocks, context, tokens, call % 2)) for llm, blocks in placed.items()}
            np.testing.assert_allclose(got[scattered], got[front], rtol=0, atol=ATOL)
            context += tokens
        assert front.pool.shape[3] == 3 and scattered.pool.shape[3] == 38  # the highest block named, + 1
        assert front.pool_bytes == front.pool.nbytes < scattered.pool_bytes
        # what was committed before each growth is still there: the first token's K in the first block
        np.testing.assert_array_equal(scattered.pool[:, :, :, 37, 0], front.pool[:, :, :, 0, 0])
        kept = front.pool[:, :, :, :2].copy()
        front.fit(2)  # between runs: only blocks 0 and 1 still hold something
        assert front.pool.shape[3] == 2
        np.testing.assert_array_equal(front.pool, kept)
        front.forward(_batch(d, [0, 1, 2], 32, 1, 0))  # block 2 again, the new block zeroed before it is written
        assert front.pool.shape[3] == 3 and not front.pool[:, :, :, 2, 1:].any()
    finally:
        front.close()
        scattered.close()


def test_a_prefill_reads_only_its_own_past_blocks(tiny_bundle):
    """past_blocks: the blocks holding the batch's past (a shared one once, padding left out) and the
    block table renumbered into them, which is what a prefill-profile call is given."""
    bundle = Bundle.open(tiny_bundle)
    llm = open_backend("ort", bundle)[0].paged_llm(num_blocks=10)
    try:
        batch = _batch(bundle.manifest.preset["llm"]["d_model"], [0], 0, 2, 0)
        batch.block_table, batch.context_lens = np.array([[7, 3, 9], [7, 5, 0]]), np.array([40, 20])
        blocks, table = llm.past_blocks(batch)
        assert blocks.tolist() == [3, 5, 7, 9]
        assert table.tolist() == [[2, 0, 3], [2, 1, 0]]
        assert not llm.in_place(batch) and llm.in_place(_batch(8, [0], 5, 1, 0))
    finally:
        llm.close()


def test_a_cuda_provider_that_does_not_start_is_an_error_not_a_cpu_session(tiny_bundle, monkeypatch):
    """onnxruntime-gpu lists its CUDA provider even where it cannot start (no cuBLAS, no cuDNN) and
    then runs on the CPU: the GPU path would bind device memory to a CPU session. Stood in for here
    by asking the CPU build for CUDA, which it drops the same way."""
    import pytest

    import vp.runtime.backends.ort as ort_backend

    monkeypatch.setattr(ort_backend, "providers", lambda: ["CUDAExecutionProvider", "CPUExecutionProvider"])
    manifest = Bundle.open(tiny_bundle).manifest
    record = manifest.components["text_encoder"]
    with pytest.warns(UserWarning, match="CUDAExecutionProvider"), \
            pytest.raises(ValueError, match=r"did not start its CUDA provider for text_encoder\.onnx \(it would run "
                                            r"on CPUExecutionProvider\): install the CUDA and cuDNN libraries"):
        ort_backend._inference_session(manifest.onnx_path(tiny_bundle, "text_encoder"), record.contract,
                                       record.precision, threads=1, cuda_stream=1234)
