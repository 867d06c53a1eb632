"""The TensorRT backend on a real GPU (skipped without one): engines built for this GPU's
compute capability, tokens equal to the torch reference, profile checks."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


@pytest.fixture(scope="module")
def gpu_bundle(tmp_path_factory):
    from vp.engines.builder import import_tensorrt, rtx_targets, usable_flavour
    from vp.export.bundle import ExportConfig, export_bundle
    from vp.runtime.backends.cuda import gpu_compute_capability

    flavour, why = usable_flavour()
    if flavour is None:
        pytest.skip(f"no TensorRT builder: {why}")
    sm = gpu_compute_capability()
    if flavour == "rtx" and sm not in rtx_targets(import_tensorrt("rtx")):
        pytest.skip(f"TensorRT-RTX does not run on this GPU (SM{sm}), and full TensorRT is not installed")
    out = tmp_path_factory.mktemp("gpu") / "tiny"
    export_bundle(ExportConfig(preset="tiny", out=out, engines=flavour, sm=(sm,)))
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


def _batch(d_model: int, context: int, tokens: int, slot: int, head: int = 0):
    """One sequence: `tokens` new ids after `context` cached ones, its blocks 0, 1, ... in order;
    logits of output head `head`."""
    from vp.runtime.backends.base import LLMBatch

    blocks = max(1, -(-(context + tokens) // 16))
    return LLMBatch(input_ids=np.arange(5, 5 + tokens)[None], input_embeds=np.zeros((1, tokens, d_model), np.float32),
                    embed_mask=np.zeros((1, tokens), bool), position_ids=np.arange(context, context + tokens)[None],
                    block_table=np.arange(blocks)[None], context_lens=np.array([context]), prefix_lens=np.array([4]),
                    head=np.array([head]), slots=np.arange(slot, slot + tokens)[None])


def test_llm_calls_match_onnx_runtime_through_graphs_and_shared_memory(gpu_bundle, tiny_models):
    """Prefill, decode steps (CUDA-graphed from the second call on with TensorRT-RTX), a second
    prefill, more decode steps: the contexts share one activation memory and the logits follow ONNX
    Runtime's on the same bundle, call after call, the output head switching from call to call (the
    graph's If, replayed in a CUDA graph). Each decode step moves its host inputs in one copy and its
    logits in one."""
    from vp.runtime.backends import open_backend
    from vp.runtime.bundle import Bundle

    trt_llm = open_backend("trt", Bundle.open(gpu_bundle))[0].paged_llm(num_blocks=8)
    ort_llm = open_backend("ort", Bundle.open(gpu_bundle))[0].paged_llm(num_blocks=8)
    d = tiny_models.preset.llm.d_model
    try:
        assert len(trt_llm._engine.contexts) == 2 and trt_llm._engine.scratch
        counter = _CopyCounter(trt_llm._engine.cudart)
        trt_llm._engine.cudart = counter
        context = 0
        for call, tokens in enumerate((4, 1, 1, 1, 1, 3, 1, 1, 1)):  # prefill, decode x4, prefill, decode x3
            counter.counts.clear()
            batch = _batch(d, context, tokens, slot=context, head=call % 2)
            got, want = trt_llm.forward(batch), ort_llm.forward(batch)
            np.testing.assert_allclose(got, want, rtol=1e-2, atol=1e-2)  # TensorRT may use TF32 in fp32 GEMMs
            if tokens == 1:
                kinds = counter._cudart.cudaMemcpyKind
                assert counter.counts == {kinds.cudaMemcpyHostToDevice: 1, kinds.cudaMemcpyDeviceToHost: 1}
            context += tokens
    finally:
        trt_llm.close()
        ort_llm.close()


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
    loaded = []
    with caplog.at_level(logging.INFO, logger="vp.runtime.backends.trt"):
        for _ in range(2):
            session = open_backend("trt", Bundle.open(gpu_bundle))[0].session("text_encoder")
            loaded.append(session._engine.cache_loaded)
            session.run(**feeds)
            session.close()
            assert cache.stat().st_size > 0
    assert loaded == [False, True]
    assert "made elsewhere" not in caplog.text


@pytest.mark.parametrize("config", [dict(), dict(temperature=0.0), dict(top_k=20, top_p=0.8, temperature=0.8)])
def test_the_sampler_engine_draws_from_the_kept_logits_what_the_host_would(gpu_bundle, tiny_models, config):
    """Decode calls over a conditional and an unconditional sequence keep their logits on the GPU; the
    sampler engine draws from them (the same stream) what the host sampler draws from the same logits
    copied back, with the same uniform numbers."""
    from vp.runtime.backends import open_backend
    from vp.runtime.backends.base import LLMBatch
    from vp.runtime.bundle import Bundle
    from vp.runtime.sampling import DRAWS, SamplingConfig, graph_config, make_rng, sample_guided

    sampling = SamplingConfig(**config)
    llm = open_backend("trt", Bundle.open(gpu_bundle))[0].paged_llm(num_blocks=8)
    d = tiny_models.preset.llm.d_model
    low, high = tiny_models.preset.vocab.visual_range()
    low, high = 0, high - low  # the visual head's columns
    try:
        assert llm.device_sampler
        for step in range(6):
            context = 4 + step
            batch = LLMBatch(input_ids=np.array([[7], [9]]), input_embeds=np.zeros((2, 1, d), np.float32),
                             embed_mask=np.zeros((2, 1), bool), position_ids=np.array([[context]] * 2),
                             block_table=np.array([[0], [1]]), context_lens=np.array([context] * 2),
                             prefix_lens=np.array([4, 4]), head=np.array([0]),
                             slots=np.array([[context], [16 + context]]))
            llm.forward_kept(batch)
            uniforms = make_rng(step).random((1, DRAWS))
            ids = llm.sample_kept(np.array([low, high]), uniforms.astype(np.float32), graph_config(sampling, True))
            logits = llm.kept_logits()
            host = sample_guided(logits[:1], logits[1:], low=low, high=high, config=sampling,
                                 rngs=[make_rng(step)])
            assert ids[0] == -1 or ids[0] == host[0], (step, ids, host)
    finally:
        llm.close()
