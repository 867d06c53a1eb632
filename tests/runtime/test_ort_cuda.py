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
