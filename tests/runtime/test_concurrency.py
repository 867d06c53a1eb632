"""One Pipeline shared by several threads: every call succeeds and equals its single-threaded run."""

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from vp.runtime.pipeline import Pipeline


@pytest.fixture(scope="module")
def pipeline(tiny_bundle):
    with Pipeline.load(tiny_bundle, backend="ort") as p:
        yield p


REQUESTS = [dict(task="t2i", prompt=f"a fox number {i}", seed=i, num_samples=1 + i % 2) for i in range(8)] + \
           [dict(task="t2v", prompt="a red fox", seed=20 + i, with_audio=bool(i % 2)) for i in range(4)]


def test_concurrent_calls_equal_single_threaded_runs(pipeline):
    alone = [pipeline.generate(**r) for r in REQUESTS]
    with ThreadPoolExecutor(max_workers=6) as pool:
        together = list(pool.map(lambda r: pipeline.generate(**r), REQUESTS))
    for a, b in zip(alone, together):
        assert len(a.samples) == len(b.samples)
        for x, y in zip(a.samples, b.samples):
            np.testing.assert_array_equal(x.tokens, y.tokens)
            np.testing.assert_array_equal(x.frames, y.frames)


def test_a_generation_while_a_stream_is_open(pipeline):
    """Other calls run between the steps of an unfinished stream; both equal their runs alone."""
    want_stream = np.concatenate([c.frames for c in pipeline.stream(task="t2v", prompt="a fox", seed=5,
                                                                     with_audio=False)])
    want = pipeline.generate(task="t2i", prompt="a dog", seed=6)
    it = pipeline.stream(task="t2v", prompt="a fox", seed=5, with_audio=False)
    first = next(it)
    got = pipeline.generate(task="t2i", prompt="a dog", seed=6)
    np.testing.assert_array_equal(got.tokens, want.tokens)
    frames = np.concatenate([first.frames, *[c.frames for c in it]])
    np.testing.assert_array_equal(frames, want_stream)


def test_streams_from_several_threads(pipeline):
    def run(seed):
        return np.concatenate([c.frames for c in pipeline.stream(task="t2v", prompt="a fox", seed=seed,
                                                                   with_audio=False)])
    alone = [run(s) for s in range(3)]
    with ThreadPoolExecutor(max_workers=3) as pool:
        together = list(pool.map(run, range(3)))
    for a, b in zip(alone, together):
        np.testing.assert_array_equal(a, b)
