"""vp-export --precision int8-wo / int8: the bundle's two graphs, its calibration record and gate,
the runtime on it, and bad input."""

import json

import numpy as np
import pytest
from click.testing import CliRunner

from vp.calibration.data import CalibrationConfig
from vp.calibration.gate import GateThresholds
from vp.calibration.llm import QuantizationConfig
from vp.engines.manifest import Manifest
from vp.export.bundle import ExportConfig, export_bundle
from vp.export.cli import main

SMALL_SET = CalibrationConfig(sequences=8, held_out=4)


@pytest.fixture(scope="module")
def int8_bundle(tmp_path_factory):
    """The tiny preset at int8-wo through vp-export's CLI, as a user runs it (gate enforced)."""
    out = tmp_path_factory.mktemp("int8") / "tiny-int8-wo"
    result = CliRunner().invoke(main, ["--preset", "tiny", "--out", str(out), "--precision", "int8-wo",
                                       "--engines", "none", "--calibration-sequences", "8",
                                       "--held-out-sequences", "4"])
    assert result.exit_code == 0, result.output
    assert "accuracy gate: passed; teacher-forced top-1" in result.output
    return out


def test_every_component_has_a_tensorrt_and_a_cpu_graph(int8_bundle):
    import onnx

    manifest = Manifest.read(int8_bundle)
    manifest.verify(int8_bundle)
    for name, c in manifest.components.items():
        assert c.precision == "int8-wo" and c.cpu_onnx == f"{name}.cpu.onnx"
    for graph, scale_type in (("llm.onnx", onnx.TensorProto.FLOAT16), ("llm.cpu.onnx", onnx.TensorProto.FLOAT)):
        inits = onnx.load(str(int8_bundle / "onnx" / graph)).graph.initializer
        assert {i.data_type for i in inits if len(i.dims) == 2} == {onnx.TensorProto.INT8}, graph  # every matrix
        assert {i.data_type for i in inits if i.name.endswith("weight_scale")} == {scale_type}
    record = manifest.calibration
    assert record["precision"] == "int8-wo" and record["statistic"] is None and record["activation_scales"] == {}
    assert record["data"]["sequences"] == 8 and len(record["data"]["fingerprint"]) == 64
    gate = record["gate"]
    assert gate["passed"] and gate["teacher_forced"]["top1"] >= 0.97 and gate["evaluation"] is None
    # the CPU graph's int8 kernels at the first K block the gate tries, which passed
    assert manifest.components["llm"].cpu_kernel_block == gate["cpu_kernel_block"] == 128 and gate["rejected"] == []
    assert {c.cpu_kernel_block for name, c in manifest.components.items() if name != "llm"} == {None}


def test_the_runtime_runs_the_cpu_graphs(int8_bundle):
    from vp.runtime.pipeline import Pipeline

    pipeline = Pipeline.load(int8_bundle, backend="ort")
    try:
        assert pipeline.backend.float_type("llm") == "fp32"
        assert pipeline.kv_block_bytes == pipeline.bundle.manifest.preset["llm"]["n_layers"] * 2 * 2 * 16 * 32 * 4
        result = pipeline.generate(task="t2v", prompt="a red circle moving left", seed=0)
        frames = result.samples[0].frames
        assert frames.shape == (17, 64, 64, 3) and frames.dtype == np.uint8 and frames.std() > 0
    finally:
        pipeline.close()


def test_vp_info_shows_the_calibration(int8_bundle):
    from vp.runtime.cli import main as vp

    result = CliRunner().invoke(vp, ["info", "--bundle", str(int8_bundle)])
    assert result.exit_code == 0, result.output
    assert "int8-wo" in result.output
    assert "calibration: weight-only int8: SmoothQuant (alpha 0.5), per-channel int8 weights" in result.output
    assert "data: 8 world sequences" in result.output and "accuracy gate: passed" in result.output
    assert "llm on a CPU: llm.cpu.onnx, ONNX Runtime's int8 MatMulNBits over K blocks of 128" in result.output


def test_an_edited_cpu_graph_is_refused(int8_bundle, tmp_path):
    import shutil

    from vp.runtime.bundle import Bundle

    copy = tmp_path / "copy"
    shutil.copytree(int8_bundle, copy)
    with open(copy / "onnx" / "llm.cpu.onnx", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="onnx/llm.cpu.onnx was changed after export"):
        Bundle.open(copy)


def test_a_missed_gate_writes_nothing(tmp_path):
    out = tmp_path / "bundle"
    strict = QuantizationConfig(precision="int8", data=SMALL_SET, thresholds=GateThresholds(top1=1.01, positions=32))
    with pytest.raises(ValueError, match=r"the int8 LLM misses the accuracy gate: top-1 agreement .* < 101%\. "
                                         r"Nothing was written"):
        export_bundle(ExportConfig(preset="tiny", out=out, engines="none", precision="int8", components=("llm",),
                                   quantization=strict))
    assert not out.exists() and list(tmp_path.iterdir()) == []


def test_a_kernel_block_that_misses_the_gate_falls_back_to_the_next(tmp_path, monkeypatch):
    """int8-wo: the gate runs at each K block of KERNEL_BLOCKS until one passes; the bundle names
    that one and the record says why the others were refused."""
    from vp.calibration import llm

    real, blocks = llm.gate, []

    def gate(calibrated, models, bundle, progress=None, fp32_rows=None):
        verdict = real(calibrated, models, bundle, progress, fp32_rows)
        blocks.append(verdict["cpu_kernel_block"])
        if verdict["cpu_kernel_block"] == 128:  # as if its scores had moved too far from fp32's
            return verdict | {"passed": False, "failures": ["t2v shape 67% vs fp32 60% (more than 5 points apart)"]}
        return verdict

    monkeypatch.setattr(llm, "gate", gate)
    out = tmp_path / "bundle"
    config = QuantizationConfig(precision="int8-wo", data=SMALL_SET, thresholds=GateThresholds(positions=32))
    summary = export_bundle(ExportConfig(preset="tiny", out=out, engines="none", precision="int8-wo",
                                         components=("llm",), quantization=config))
    assert blocks == [128, 32]
    manifest = Manifest.read(out)
    gate_record = manifest.calibration["gate"]
    assert manifest.components["llm"].cpu_kernel_block == gate_record["cpu_kernel_block"] == 32 and gate_record["passed"]
    assert gate_record["rejected"] == [{"cpu_kernel_block": 128,
                                        "failures": ["t2v shape 67% vs fp32 60% (more than 5 points apart)"]}]
    assert "  K block 128 missed the gate: t2v shape 67% vs fp32 60% (more than 5 points apart)" in summary.calibration


def test_w8a8_records_its_activation_scales(tmp_path):
    out = tmp_path / "bundle"
    config = QuantizationConfig(precision="int8", statistic="percentile", data=SMALL_SET, enforce=False)
    export_bundle(ExportConfig(preset="tiny", out=out, engines="none", precision="int8", components=("llm",),
                               quantization=config))
    record = json.loads((out / "manifest.json").read_text())["calibration"]
    assert record["statistic"] == "percentile" and record["smoothquant_alpha"] == 0.5
    assert len(record["activation_scales"]) == 4 * 4 + 1 and min(record["activation_scales"].values()) > 0
    assert record["gate"] == {"skipped": "--no-accuracy-gate"}
    assert Manifest.read(out).components["llm"].cpu_kernel_block is None  # MatMulIntegerToFloat takes no block


def test_smoothquant_defaults_by_precision_and_can_be_set():
    assert QuantizationConfig(precision="int8").alpha == 0.5
    assert QuantizationConfig(precision="int8-wo").alpha == 0.5
    assert QuantizationConfig(precision="int8-wo", smoothquant_alpha=0.3).alpha == 0.3
    assert QuantizationConfig(precision="int8", smoothquant_alpha=0).alpha is None


def test_weight_only_without_smoothquant_records_it(tmp_path):
    out = tmp_path / "bundle"
    config = QuantizationConfig(precision="int8-wo", smoothquant_alpha=0, data=SMALL_SET, enforce=False)
    export_bundle(ExportConfig(preset="tiny", out=out, engines="none", precision="int8-wo", components=("llm",),
                               quantization=config))
    record = json.loads((out / "manifest.json").read_text())["calibration"]
    assert record["smoothquant_alpha"] is None and record["activation_scales"] == {}
    assert record["method"].startswith("weight-only int8: per-channel int8 weights")


@pytest.mark.parametrize("args, message", [
    (["--preset", "paper-300m", "--precision", "int8"], "preset paper-300m has no calibration data source"),
    (["--preset", "tiny", "--precision", "int8-wo", "--calibration-sequences", "3"],
     "a calibration set of 3 sequences with 16 held out is too small"),
    (["--preset", "tiny", "--precision", "int8-wo", "--components", "text_encoder"],
     "--precision int8-wo quantizes the LLM: include llm in --components"),
    (["--preset", "tiny", "--precision", "int4"], "Invalid value for '--precision'"),
    (["--preset", "tiny", "--precision", "int8-wo", "--smoothquant-alpha", "1"], "Invalid value for '--smoothquant-alpha'"),
])
def test_bad_input_is_refused_before_any_work(args, message, tmp_path):
    out = tmp_path / "bundle"
    result = CliRunner().invoke(main, [*args, "--out", str(out), "--engines", "none"])
    assert result.exit_code != 0 and message in result.output, result.output
    assert not out.exists()
