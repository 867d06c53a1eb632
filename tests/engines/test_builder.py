"""Real TensorRT-RTX engines for the tiny preset (ahead of time, no GPU), fp32 and fp16;
parser errors and missing builders reported clearly."""

import json
import sys

import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper

from vp.engines.builder import EngineBuildError, EngineFromOnnx, import_tensorrt, sha256_of, strongly_typed_network
from vp.engines.contract import Contract, Profile, TensorSpec
from vp.engines.manifest import Manifest

trt = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by the test extras (vp[rtx])")


@pytest.fixture(scope="module")
def rtx_bundle(tmp_path_factory):
    """`vp-export --preset tiny --engines rtx` through its CLI, as a user runs it."""
    from vp.export.cli import main

    out = tmp_path_factory.mktemp("rtx") / "tiny"
    result = CliRunner().invoke(main, ["--preset", "tiny", "--out", str(out), "--engines", "rtx", "--sm", "89"])
    assert result.exit_code == 0, result.output
    return out


@pytest.fixture(scope="module")
def rtx_bundle_fp16(tmp_path_factory):
    from vp.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("rtx") / "tiny-fp16"
    export_bundle(ExportConfig(preset="tiny", out=out, engines="rtx", precision="fp16", sm=(89,)))
    return out


@pytest.mark.parametrize("bundle_fixture,precision", [("rtx_bundle", "fp32"), ("rtx_bundle_fp16", "fp16")])
def test_every_component_has_a_fingerprinted_engine(bundle_fixture, precision, request):
    bundle = request.getfixturevalue(bundle_fixture)
    manifest = Manifest.read(bundle)
    assert set(manifest.engines) == set(manifest.components) == {
        "llm", "text_encoder", "video_encoder", "video_decoder", "video_decoder_first", "video_decoder_step",
        "audio_encoder", "audio_decoder", "superres_0", "sr_fusion", "sampler"}
    for name, engine in manifest.engines.items():
        path = bundle / "engines" / engine.path
        assert path.stat().st_size == engine.bytes > 100_000, name
        assert sha256_of(path) == engine.sha256
        assert engine.flavour == "rtx" and engine.version == trt.__version__
        assert engine.compute_capabilities == (89,)
        assert engine.build_seconds > 0 and engine.peak_rss_mb > 0
        assert manifest.components[name].precision == precision
    assert manifest.engines["llm"].profiles == ("prefill", "decode")
    assert not (bundle / "timing.cache").exists()  # TensorRT-RTX builds without timing (full TensorRT writes it)
    manifest.verify(bundle)


def test_edited_engine_fails_verification(rtx_bundle, tmp_path):
    import shutil

    copy = tmp_path / "b"
    shutil.copytree(rtx_bundle, copy)
    with open(copy / "engines" / "llm.engine", "ab") as f:
        f.write(b"\0")
    with pytest.raises(ValueError, match="engines/llm.engine was changed after export"):
        Manifest.read(copy).verify(copy)


def test_manifest_records_the_engine_build(rtx_bundle):
    body = json.loads((rtx_bundle / "manifest.json").read_text())
    llm = body["engines"]["llm"]
    assert {"flavour", "version", "compute_capabilities", "profiles", "sha256", "build_seconds",
            "peak_rss_mb"} <= set(llm)
    assert "tensorrt_rtx" in body["engines_note"]


def _graph_with_unknown_op(path):
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", 4])
    node = helper.make_node("FrobnicateOp", ["x"], ["y"], name="the_bad_node", domain="vp.test")
    model = helper.make_model(helper.make_graph([node], "g", [x], [y]),
                              opset_imports=[helper.make_opsetid("", 18), helper.make_opsetid("vp.test", 1)])
    onnx.save(model, str(path))
    return Contract(component="bad", doc="", inputs=(TensorSpec("x", "float32", ("batch", 4), ""),),
                    outputs=(TensorSpec("y", "float32", ("batch", 4), ""),),
                    profiles=(Profile("main", {"batch": (1, 1, 2)}),))


def test_parser_error_names_node_and_op(tmp_path):
    contract = _graph_with_unknown_op(tmp_path / "bad.onnx")
    with pytest.raises(EngineBuildError) as error:
        EngineFromOnnx(tmp_path / "bad.onnx", contract, flavour="rtx").build(tmp_path / "bad.engine")
    assert "the_bad_node" in str(error.value) and "FrobnicateOp" in str(error.value)
    assert not (tmp_path / "bad.engine").exists()


def test_unknown_compute_capability(tiny_bundle, tmp_path):
    manifest = Manifest.read(tiny_bundle)
    builder = EngineFromOnnx(tiny_bundle / "onnx" / "audio_decoder.onnx",
                             manifest.components["audio_decoder"].contract, flavour="rtx",
                             compute_capabilities=(90,))
    with pytest.raises(ValueError, match="cannot target SM90"):
        builder.build(tmp_path / "x.engine")


def test_networks_are_strongly_typed():
    """The builder's network takes its tensor types from the ONNX. TensorRT-RTX networks are strongly
    typed whatever the flags; full TensorRT's default (flags 0) is weakly typed and may run an fp16
    graph's layers in fp32 or the reverse, so the flag is set for both (the same call builds both)."""
    builder = trt.Builder(trt.Logger(trt.Logger.ERROR))
    assert strongly_typed_network(trt, builder).get_flag(trt.NetworkDefinitionCreationFlag.STRONGLY_TYPED)


def test_missing_tensorrt_names_the_pip_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt", None)  # makes `import tensorrt` fail
    with pytest.raises(ValueError, match=r"pip install 'vp\[trt\]'"):
        import_tensorrt("trt")


def test_ctrl_c_stops_an_engine_build_promptly(tmp_path):
    """SIGINT in the middle of `vp-export --engines rtx`: the build stops at its next progress
    step (not at the end of the build), the CLI says so, and nothing is left at --out."""
    import re
    import subprocess

    code = (
        "import os, signal, threading, sys\n"
        "from vp.engines import builder\n"
        "real = builder.EngineFromOnnx.build\n"
        "def build(self, path):\n"  # the first engine build gets a Ctrl-C one second in
        "    threading.Timer(1.0, os.kill, (os.getpid(), signal.SIGINT)).start()\n"
        "    try:\n"
        "        return real(self, path)\n"
        "    except KeyboardInterrupt as stop:\n"
        "        print('raised by:', stop, file=sys.stderr)\n"
        "        raise\n"
        "builder.EngineFromOnnx.build = build\n"
        "from vp.export.cli import main\n"
        f"main(['--preset', 'tiny', '--out', r'{tmp_path / 'b'}', '--engines', 'rtx', '--sm', '89'])\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert result.returncode == 130, result.stderr[-2000:]
    assert "interrupted: nothing was written at" in result.stderr
    # cancelled through the builder's progress monitor, inside the build (a SIGINT left to Python
    # would only be raised after build_serialized_network returned, at the end of the build)
    assert re.search(r"raised by: the \w+ engine build was interrupted", result.stderr), result.stderr[-2000:]
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # no bundle, no partial, no lock


@pytest.mark.parametrize("precision", ["int8-wo", "int8"])
def test_int8_llm_builds_into_an_engine(precision, tmp_path):
    """Both INT8 LLM graphs (fp16 around int8 weights; int8 also with Q/DQ activations) are real
    TensorRT-RTX engines; the bundle records the flavour and its calibration."""
    from vp.calibration.data import CalibrationConfig
    from vp.calibration.llm import QuantizationConfig
    from vp.export.bundle import ExportConfig, export_bundle

    out = tmp_path / precision
    quantization = QuantizationConfig(precision=precision, data=CalibrationConfig(sequences=8, held_out=4),
                                      enforce=False)
    export_bundle(ExportConfig(preset="tiny", out=out, engines="rtx", precision=precision, sm=(89,),
                               components=("llm",), quantization=quantization))
    manifest = Manifest.read(out)
    engine = manifest.engines["llm"]
    assert engine.flavour == "rtx" and (out / "engines" / engine.path).stat().st_size == engine.bytes > 100_000
    assert manifest.components["llm"].precision == precision
    assert manifest.calibration["precision"] == precision and manifest.calibration["gate"] == {
        "skipped": "--no-accuracy-gate"}
