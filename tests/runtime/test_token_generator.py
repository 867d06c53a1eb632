"""The token loop's device-sampling path (PagedLLM.device_sampler) on the CPU: an LLM that "keeps" its
logits on the host and draws from them with the bundle's sampler graph under ONNX Runtime generates
what host sampling does, seed for seed (the GPU run of the same path: tests/runtime/test_trt_backend.py)."""

import numpy as np
import pytest

from vp.runtime.backends.ort import OrtBackend, OrtPagedLLM, OrtSession


class KeptOnHost(OrtPagedLLM):
    device_sampler = True

    def __init__(self, *args, sampler: OrtSession, calls: list, leave: list):
        super().__init__(*args)
        self._sampler, self._calls, self._leave, self._kept = sampler, calls, leave, None

    def forward_kept(self, batch):
        self._kept = self.forward(batch)

    def sample_kept(self, window, uniforms, config):
        (ids,) = self._sampler.run(logits=self._kept, window=window, uniforms=uniforms, config=config)
        ids[self._leave] = -1  # as the graph does with a row whose draws were all rejected
        self._calls.append(ids.copy())
        return ids

    def kept_logits(self):
        return self._kept


class KeptBackend(OrtBackend):
    def __init__(self, *args):
        super().__init__(*args)
        self.calls, self.leave = [], []

    def paged_llm(self, num_blocks):
        return KeptOnHost(*self._path("llm"), num_blocks, self.threads, sampler=self.session("sampler"),
                          calls=self.calls, leave=self.leave)


@pytest.fixture(scope="module")
def pipelines(tiny_bundle):
    from vp.runtime.bundle import Bundle
    from vp.runtime.pipeline import Pipeline

    bundle = Bundle.open(tiny_bundle)
    backend = KeptBackend(bundle.path, bundle.manifest)
    with Pipeline(bundle, backend, "test") as kept, Pipeline.load(tiny_bundle, backend="ort") as host:
        yield kept, host, backend


@pytest.mark.parametrize("kwargs", [
    dict(task="t2v", prompt="a red fox in the snow", seed=3),  # sampled, CFG 3: two branches per call
    dict(task="t2i", prompt="a red fox", seed=5, num_samples=3, cfg_scale=1.0, top_k=40),
    dict(task="t2i", prompt="a red fox", seed=1, temperature=0.0),
])
def test_device_draws_generate_what_host_sampling_does(pipelines, kwargs):
    kept, host, backend = pipelines
    backend.calls.clear()
    result = kept.generate(**kwargs)
    assert len(backend.calls) > 10 and all(np.all(ids >= 0) for ids in backend.calls)  # the decode steps drew through the sampler graph
    assert result.tokens.tobytes() == host.generate(**kwargs).tokens.tobytes()


def test_rows_the_graph_leaves_are_drawn_on_the_host_from_the_same_uniforms(pipelines):
    kept, host, backend = pipelines
    kwargs = dict(task="t2i", prompt="a red fox", seed=2, num_samples=3, top_p=0.5)
    backend.calls.clear()
    backend.leave[:] = [0, 2]
    try:
        result = kept.generate(**kwargs)
    finally:
        backend.leave.clear()
    assert backend.calls and all(np.all(ids[[0, 2]] == -1) for ids in backend.calls)
    assert result.tokens.tobytes() == host.generate(**kwargs).tokens.tobytes()
