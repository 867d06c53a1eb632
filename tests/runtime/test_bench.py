"""`vp bench` on the tiny bundle: a report that follows its schema, with figures that hang together."""

import json

import jsonschema
import pytest
from click.testing import CliRunner

from vp.runtime.bench import SCHEMA, kv_bytes, llm_weight_bytes, memory_bandwidth_gbs
from vp.runtime.cli import main


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
    assert run["floor"]["ratio"] == pytest.approx(run["decode"]["median_ms"] / run["floor"]["floor_ms"])
    assert run["time_to_first_frame_ms"] < run["end_to_end"]["median_ms"]
    assert report["sharing"]["saved_blocks"] >= 3  # 4 samples of one prompt share their full prefix block


def test_floor_arithmetic():
    llm = dict(vocab_size=1000, d_model=64, n_layers=2, n_heads=4, n_kv_heads=2, mlp_hidden=128)
    per_layer = 2 * 64 * 64 + 2 * 64 * 32 + 3 * 64 * 128 + 2 * 64
    assert llm_weight_bytes(llm, 4) == (1000 * 64 + 2 * per_layer + 64) * 4
    assert kv_bytes(llm, 100, 2, 2) == 2 * 100 * 2 * 2 * 2 * 16 * 2
    assert memory_bandwidth_gbs(megabytes=8, repeats=2) > 0.1


def test_bad_options(tiny_bundle):
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--batch", "0"])
    assert result.exit_code == 2 and "positive integers" in result.output
    result = CliRunner().invoke(main, ["bench", "--bundle", str(tiny_bundle), "--prompt-len", "100"])
    assert result.exit_code == 1 and "prompt_len" in result.output
