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
