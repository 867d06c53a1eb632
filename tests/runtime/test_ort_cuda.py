"""ONNX Runtime's CUDA provider with the KV pool on the GPU (skipped without onnxruntime-gpu and a GPU)."""

import numpy as np
import pytest

pytestmark = pytest.mark.gpu


def test_cuda_provider_tokens_equal_the_reference(tiny_bundle, tiny_models):
    import onnxruntime as ort

    from vp.models.reference import generate
    from vp.runtime.backends.ort import OrtCudaPagedLLM
    from vp.runtime.pipeline import Pipeline

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    with Pipeline.load(tiny_bundle, backend="ort") as pipeline:
        kwargs = dict(task="t2i", prompt="a red fox", seed=0, temperature=0.0)
        got = pipeline.generate(**kwargs)
        assert isinstance(pipeline._kv.llm, OrtCudaPagedLLM)
    np.testing.assert_array_equal(got.tokens, generate(tiny_models, **kwargs).tokens)


def test_cuda_provider_copy_on_write_is_ordered_with_its_kernels(tiny_bundle, tiny_models):
    """Samples forked from one prefill write into shared partial blocks: the copy-on-write copies
    go on the provider's own stream (user_compute_stream), so every sample's tokens equal the
    reference's, seeded and sampled."""
    import onnxruntime as ort

    from vp.models.reference import generate
    from vp.runtime.pipeline import Pipeline

    if "CUDAExecutionProvider" not in ort.get_available_providers():
        pytest.skip("onnxruntime-gpu is not installed")
    kwargs = dict(task="t2i", prompt="a red fox")
    with Pipeline.load(tiny_bundle, backend="ort") as pipeline:
        got = pipeline.generate(seed=3, num_samples=3, **kwargs)
        assert got.kv_stats.saved_blocks > 0  # the samples shared their prefix blocks
    for i, sample in enumerate(got.samples):  # sample i draws with seed + i, as a run of its own
        np.testing.assert_array_equal(np.ravel(sample.tokens), np.ravel(generate(tiny_models, seed=3 + i, **kwargs).tokens))
