"""The TensorRT backend on a real GPU (skipped without one): engines built for this GPU's
compute capability, tokens equal to the torch reference, profile checks."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory):
    from vp.engines.builder import usable_flavour
    from vp.export.bundle import ExportConfig, export_bundle
    from vp.runtime.backends.cuda import gpu_compute_capability

    flavour, why = usable_flavour()
    if flavour is None:
        pytest.skip(f"no TensorRT builder: {why}")
    out = tmp_path_factory.mktemp("gpu") / "tiny"
    export_bundle(ExportConfig(preset="tiny", out=out, engines=flavour, sm=(gpu_compute_capability(),)))
    return out


@pytest.fixture(scope="module")
def trt_pipeline(gpu_bundle):
    from vp.runtime.pipeline import Pipeline

    with Pipeline.load(gpu_bundle, backend="trt") as pipeline:
        yield pipeline


def test_auto_picks_tensorrt(gpu_bundle):
    from vp.runtime.pipeline import Pipeline

    with Pipeline.load(gpu_bundle) as pipeline:
        assert pipeline.backend.name == "trt", pipeline.backend_reason


@pytest.mark.parametrize("task", ["t2v", "t2i"])
def test_greedy_tokens_equal_the_reference(trt_pipeline, tiny_models, task):
    from vp.models.reference import generate

    kwargs = dict(task=task, prompt="a red fox in the snow", seed=0, temperature=0.0)
    np.testing.assert_array_equal(trt_pipeline.generate(**kwargs).tokens, generate(tiny_models, **kwargs).tokens)


def test_samples_with_cfg_share_blocks_on_the_device(trt_pipeline):
    result = trt_pipeline.generate(task="t2i", prompt="a red fox " * 8, seed=0, num_samples=4)
    assert result.kv_stats.saved_blocks > 0
    assert len({s.tokens.tobytes() for s in result.samples}) > 1


def test_shapes_outside_the_profile_are_refused(trt_pipeline):
    session = trt_pipeline.session("text_encoder")
    with pytest.raises(ValueError, match="outside the engine's profile"):
        session.run(text_ids=np.zeros((1, 65), np.int64), text_mask=np.ones((1, 65), bool))


def test_gpu_bandwidth_and_memory_probes():
    """The GPU probes read what the device has: a bandwidth between 50 GB/s and 10 TB/s, and
    memory in use that grows by what is allocated."""
    from vp.runtime.backends.cuda import check, load_cudart
    from vp.runtime.memory_floor import gpu_bandwidth_gbs, gpu_memory_used_bytes

    assert 50 < gpu_bandwidth_gbs(megabytes=64, repeats=3) < 10_000
    cudart = load_cudart()
    before = gpu_memory_used_bytes()
    pointer = check(cudart.cudaMalloc(256 * 2**20))
    try:
        assert gpu_memory_used_bytes() - before >= 256 * 2**20
    finally:
        cudart.cudaFree(pointer)


def test_bench_floor_and_memory_are_the_gpus(gpu_bundle):
    from vp.runtime.bench import BenchConfig, run_bench

    report = run_bench(BenchConfig(bundle=str(gpu_bundle), backend="trt", warmup=0, iters=1, share_samples=2))
    run = report["runs"][0]
    assert run["floor"]["device"] == "gpu"
    assert run["floor"]["bandwidth_gbs"] == report["memory"]["gpu"]["memory_bandwidth_gbs"]
    assert report["memory"]["gpu"]["used_mb"] >= report["memory"]["kv_pool_mb"]  # the pool is on the device


class _CopyCounter:
    """cuda-python's cudart with cudaMemcpyAsync counted by direction."""

    def __init__(self, cudart):
        self._cudart, self.counts = cudart, {}

    def __getattr__(self, name):
        return getattr(self._cudart, name)

    def cudaMemcpyAsync(self, dst, src, nbytes, kind, stream):
        self.counts[kind] = self.counts.get(kind, 0) + 1
        return self._cudart.cudaMemcpyAsync(dst, src, nbytes, kind, stream)


def test_a_decode_step_moves_its_inputs_in_one_copy(gpu_bundle, tiny_models):
    """The seven host inputs of a decode call travel packed in one pinned buffer (one host-to-device
    copy), the logits in one device-to-host copy; the logits equal those of per-input copies' era,
    i.e. the reference's (the greedy parity test), and the K/V land in the pool."""
    from vp.runtime.backends import open_backend
    from vp.runtime.backends.base import LLMBatch
    from vp.runtime.bundle import Bundle

    backend, _ = open_backend("trt", Bundle.open(gpu_bundle))
    llm = backend.paged_llm(num_blocks=8)
    try:
        counter = _CopyCounter(llm._engine.cudart)
        llm._engine.cudart = counter
        d = tiny_models.preset.llm.d_model
        batch = LLMBatch(input_ids=np.array([[5]]), input_embeds=np.zeros((1, 1, d), np.float32),
                         embed_mask=np.zeros((1, 1), bool), position_ids=np.array([[0]]),
                         block_table=np.array([[0]]), context_lens=np.array([0]), prefix_lens=np.array([1]),
                         slots=np.array([[0]]))
        logits = llm.forward(batch)
        kinds = counter._cudart.cudaMemcpyKind
        assert counter.counts == {kinds.cudaMemcpyHostToDevice: 1, kinds.cudaMemcpyDeviceToHost: 1}
        assert logits.shape == (1, tiny_models.preset.llm.vocab_size) and np.isfinite(logits).all()
    finally:
        llm.close()


def test_profiles_share_one_activation_memory(gpu_bundle, tiny_models):
    """The LLM's prefill and decode contexts run in one user-managed allocation of the engine's
    largest profile's size (each context held its own before)."""
    from vp.runtime.backends import open_backend
    from vp.runtime.backends.base import LLMBatch
    from vp.runtime.bundle import Bundle

    backend, _ = open_backend("trt", Bundle.open(gpu_bundle))
    llm = backend.paged_llm(num_blocks=8)
    try:
        assert len(llm._engine.contexts) == 2 and llm._engine.scratch
        for tokens in (1, 5):  # the decode profile's context, then prefill's, in the same memory
            d = tiny_models.preset.llm.d_model
            batch = LLMBatch(input_ids=np.full((1, tokens), 5), input_embeds=np.zeros((1, tokens, d), np.float32),
                             embed_mask=np.zeros((1, tokens), bool), position_ids=np.arange(tokens)[None],
                             block_table=np.array([[0]]), context_lens=np.array([0]), prefix_lens=np.array([tokens]),
                             slots=np.arange(tokens)[None])
            assert np.isfinite(llm.forward(batch)).all()
    finally:
        llm.close()


def test_rtx_runtime_cache_is_kept_beside_the_engine(gpu_bundle, caplog):
    """TensorRT-RTX compiles kernels at run time; the cache of them is written beside the engine at
    close() and read back, as compatible, at the next load."""
    import logging

    from vp.engines.manifest import Manifest
    from vp.runtime.backends import open_backend
    from vp.runtime.bundle import Bundle

    manifest = Manifest.read(gpu_bundle)
    if manifest.engines["text_encoder"].flavour != "rtx":
        pytest.skip("full TensorRT compiles ahead of time: no runtime cache")
    cache = manifest.engine_path(gpu_bundle, "text_encoder").with_name(manifest.engines["text_encoder"].path + ".rtcache")
    cache.unlink(missing_ok=True)
    feeds = dict(text_ids=np.zeros((1, 4), np.int64), text_mask=np.ones((1, 4), bool))
    for _ in range(2):
        backend, _ = open_backend("trt", Bundle.open(gpu_bundle))
        session = backend.session("text_encoder")
        with caplog.at_level(logging.INFO, logger="vp.runtime.backends.trt"):
            session.run(**feeds)
            session.close()
        assert cache.stat().st_size > 0
    assert "made elsewhere" not in caplog.text
