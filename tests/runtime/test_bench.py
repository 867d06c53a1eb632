"""`vp bench` on the tiny bundle: a report that follows its schema, with figures that hang together."""

import json

import jsonschema
import pytest
from click.testing import CliRunner

from vp.runtime.bench_report import SCHEMA
from vp.runtime.cli import main
from vp.runtime.memory_floor import host_read_bandwidth_gbs, kv_bytes, llm_weight_bytes


@pytest.fixture(scope="module")
def report(tiny_bundle, tmp_path_factory):
    out = tmp_path_factory.mktemp("bench") / "bench.json"
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--warmup", "1", "--iters", "2",
                                       "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "decode step (TPOT)" in result.output and "measured/floor" in result.output
    return json.loads(out.read_text())


def test_report_follows_the_schema(report):
    jsonschema.validate(report, SCHEMA)
    assert report["warmup"] == 1 and report["iters"] == 2 and report["backend"] == "ort"


def test_figures_hang_together(report):
    run = report["runs"][0]
    assert run["sequences"] == 2  # one sample + its CFG branch
    assert run["decode"]["n"] >= 2 * 700  # every decode step of both runs
    assert 0 < run["decode"]["median_ms"] <= run["decode"]["p90_ms"] <= run["decode"]["p99_ms"]
    assert run["end_to_end"]["median_ms"] > run["prefill"]["median_ms"] + run["decode"]["median_ms"] * 700
    assert 0 <= run["overhead_share"] < 1 and 0 <= run["kv"]["waste"] < 0.1
    assert run["floor"]["device"] == "host" and report["memory"]["gpu"] is None  # ONNX Runtime on the CPU
    assert run["floor"]["bandwidth_gbs"] == report["machine"]["memory_bandwidth_gbs"]
    stream = report["stream"]  # the first latent frame is a fifth of the clip's tokens
    assert stream["time_to_first_frame"]["median_ms"] < run["end_to_end"]["median_ms"] / 2
    assert stream["decode_ratio"] == stream["decode_streamed"]["median_ms"] / stream["decode_whole_clip"]["median_ms"]
    assert report["sharing"]["saved_blocks"] >= 3  # 4 samples of one prompt share their full prefix block


def test_floor_bytes_are_what_the_graph_and_the_pool_hold(tiny_bundle):
    """The weight bytes a decode step reads are the LLM graph's initializers (within 1%: norms and
    rotary tables aside); the K/V bytes of a full pool are the pool's bytes."""
    import onnx
    from onnx import numpy_helper

    from vp.runtime.bundle import Bundle
    from vp.runtime.pipeline import Pipeline

    bundle = Bundle.open(tiny_bundle)
    llm = bundle.manifest.preset["llm"]
    graph = onnx.load(str(bundle.manifest.onnx_path(bundle.path, "llm")))
    initializers = sum(numpy_helper.to_array(t).nbytes for t in graph.graph.initializer)
    assert llm_weight_bytes(llm, 4) == pytest.approx(initializers, rel=0.01)
    with Pipeline.load(tiny_bundle, backend="ort") as pipeline:
        pipeline.generate(task="t2i", prompt="a fox", seed=0)
        tokens = pipeline.kv_pool_bytes // pipeline.kv_block_bytes * pipeline.block_size
        assert kv_bytes(llm, tokens, 1, 4) == pipeline.kv_pool_bytes
    assert host_read_bandwidth_gbs(megabytes=8, repeats=2) > 0.1


def test_bad_options(tiny_bundle):
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--batch", "0"])
    assert result.exit_code == 2 and "positive integers" in result.output
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--prompt-len", "100"])
    assert result.exit_code == 1 and "prompt_len" in result.output
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--json", "/no/such/folder/b.json"])
    assert result.exit_code == 1 and "output folder /no/such/folder does not exist" in result.output
    assert "..." not in result.output  # refused before any measuring
