"""The sampler graph (vp.export.sampler_graph), exported and run by ONNX Runtime on the CPU, against
the host sampler it mirrors: the same uniform numbers give the same ids."""

import dataclasses

import numpy as np
import pytest

from vp.runtime.sampling import DRAWS, SamplingConfig, graph_config, make_rng, sample_guided


@pytest.fixture(scope="module")
def sampler(tiny_models, tmp_path_factory):
    import onnxruntime as ort

    from vp.export.contracts import sampler_contract
    from vp.export.onnx_export import export_component

    # logits wider than the tiny preset's heads (1,024 columns, MAX_TOP_K), so that a top-k beyond
    # the graph's TopK can be asked for
    contract = sampler_contract(tiny_models.preset)
    logits = contract.input("logits")
    wide = dataclasses.replace(logits, shape=(logits.shape[0], 2304))
    contract = dataclasses.replace(contract, inputs=tuple(wide if s is logits else s for s in contract.inputs))
    path = tmp_path_factory.mktemp("sampler") / "sampler.onnx"
    export_component(tiny_models, contract, path)
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session, contract.input("logits").shape[1]


def _run(sampler, cond, uncond, low, high, config, seeds):
    """(graph ids, host ids) of one step: the graph gets the uniforms the host's generators give first."""
    session, _ = sampler
    guided = uncond is not None and config.guided
    uniforms = np.stack([make_rng(s).random(DRAWS) for s in seeds])
    logits = np.concatenate([cond, uncond]) if guided else cond
    (ids,) = session.run(None, dict(logits=logits, window=np.array([low, high], np.int64),
                                    uniforms=uniforms.astype(np.float32), config=graph_config(config, guided)))
    host = sample_guided(cond, uncond if guided else None, low=low, high=high, config=config,
                         rngs=[make_rng(s) for s in seeds])
    return ids, host


@pytest.mark.parametrize("config", [
    SamplingConfig(),  # the default: top-p 0.9, CFG 3
    SamplingConfig(top_k=20, top_p=0.8, cfg_scale=1.0),
    SamplingConfig(temperature=0.7, top_k=5, top_p=1.0),
    SamplingConfig(temperature=1.3, top_p=0.5, cfg_scale=2.0),
])
@pytest.mark.parametrize("spread", [0.5, 4.0])  # near-flat and peaked logits
def test_draws_equal_the_host_samplers_from_the_same_uniforms(sampler, config, spread):
    _, vocab = sampler
    rng = np.random.default_rng(7)
    agree = left = 0
    for step in range(25):
        cond, uncond = (rng.standard_normal((2, 4, vocab)) * spread).astype(np.float32)
        low = int(rng.integers(0, vocab - 600))
        high = low + int(rng.integers(100, 600))
        ids, host = _run(sampler, cond, uncond, low, high, config, seeds=range(4 * step, 4 * step + 4))
        drawn = ids >= 0
        assert np.all((ids[drawn] >= low) & (ids[drawn] < high))
        np.testing.assert_array_equal(ids[drawn], host[drawn])
        agree += drawn.sum()
        left += (~drawn).sum()
    # a row is left to the host only when all DRAWS draws were rejected: at most (1 - top_p)^4 of them
    assert left <= max(2, 0.05 * (agree + left)), (agree, left)


def test_greedy_is_the_first_argmax_of_the_mixed_window(sampler):
    _, vocab = sampler
    rng = np.random.default_rng(3)
    cond, uncond = rng.standard_normal((2, 3, vocab)).astype(np.float32)
    config = SamplingConfig(temperature=0.0)
    ids, host = _run(sampler, cond, uncond, 100, 900, config, seeds=range(3))
    np.testing.assert_array_equal(ids, host)
    mixed = uncond + 3.0 * (cond - uncond)
    np.testing.assert_array_equal(ids, mixed[:, 100:900].argmax(axis=1) + 100)


def test_a_top_k_beyond_its_topk_is_left_to_the_host(sampler):
    from vp.export.sampler_graph import MAX_TOP_K

    _, vocab = sampler
    cond = np.random.default_rng(0).standard_normal((2, vocab)).astype(np.float32)
    ids, _ = _run(sampler, cond, None, 0, vocab, SamplingConfig(top_k=MAX_TOP_K + 1, cfg_scale=1.0), seeds=(0, 1))
    np.testing.assert_array_equal(ids, [-1, -1])
    ids, host = _run(sampler, cond, None, 0, vocab, SamplingConfig(top_k=MAX_TOP_K, cfg_scale=1.0), seeds=(0, 1))
    np.testing.assert_array_equal(ids, host)
