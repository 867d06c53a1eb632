"""vp-export's bundle: manifest content, atomic writes, external data, bad input."""

import json
import sys

import numpy as np
import onnxruntime as ort
import pytest
from click.testing import CliRunner

from vp.export import bundle as bundle_module
from vp.export.bundle import ExportConfig, export_bundle
from vp.export.cli import main
from vp.engines.manifest import FORMAT_VERSION


def test_manifest_describes_every_component(tiny_bundle):
    body = json.loads((tiny_bundle / "manifest.json").read_text())
    assert body["format_version"] == FORMAT_VERSION
    assert body["preset"]["name"] == "tiny" and body["preset"]["llm"]["d_model"] == 128
    assert body["vocabulary"] == {"visual_codes": 1024, "audio_levels": 4, "audio_codes": 256, "text_words": 0}
    assert body["sampling"]["cfg_scale"] == 3.0
    llm = body["components"]["llm"]
    assert llm["precision"] == "fp32" and len(llm["sha256"]) == 64
    assert [t["name"] for t in llm["contract"]["inputs"]] == [
        "input_ids", "input_embeds", "embed_mask", "position_ids", "block_table", "context_lens", "prefix_lens",
        *(f"{kv}_pool.{layer}" for layer in range(4) for kv in "kv"), "head"]
    assert llm["contract"]["inputs"][7 + 1]["shape"] == [2, "num_blocks", 16, 32]  # v_pool.0: [kv_heads, ...]
    assert llm["contract"]["outputs"][0]["shape"] == ["batch", 1024]  # the widest head: the 1,024 visual codes
    assert [p["name"] for p in llm["contract"]["profiles"]] == ["prefill", "decode"]
    assert body["engines"] == {} and "--engines none" in body["engines_note"]
    assert (tiny_bundle / "tokenizer.json").is_file() and len(body["tokenizer_sha256"]) == 64
    assert body["clip"]["text_vocab"] == 30522 and len(body["config_sha256"]) == 64
    for name, component in body["components"].items():
        session = ort.InferenceSession(str(tiny_bundle / "onnx" / component["onnx"]), providers=["CPUExecutionProvider"])
        assert [i.name for i in session.get_inputs()] == [t["name"] for t in component["contract"]["inputs"]], name
        assert [o.name for o in session.get_outputs()] == [t["name"] for t in component["contract"]["outputs"]]


def test_video_decoder_takes_one_and_five_latent_frames(tiny_bundle):
    session = ort.InferenceSession(str(tiny_bundle / "onnx" / "video_decoder.onnx"), providers=["CPUExecutionProvider"])
    for t, frames in [(1, 1), (5, 17)]:
        (video,) = session.run(None, {"codes": np.zeros((1, t, 8, 8), np.int64)})
        assert video.shape == (1, 3, frames, 64, 64)


def test_large_graphs_keep_weights_in_one_external_file(tmp_path, monkeypatch, tiny_models):
    """Above protobuf's 2 GB the exporter writes a file per weight; vp gathers them into
    `<graph>.onnx.data`. Forced here by having the tracer save every weight externally."""
    import torch

    from vp.export import onnx_export
    from vp.export.contracts import contracts

    real_export = torch.onnx.export

    def export_like_a_large_model(*args, **kwargs):
        import onnx

        real_export(*args, **kwargs)
        path = args[2]
        model = onnx.load(path)
        onnx.save_model(model, path, save_as_external_data=True, all_tensors_to_one_file=False, size_threshold=0)

    monkeypatch.setattr(torch.onnx, "export", export_like_a_large_model)
    contract = contracts(tiny_models.preset)["audio_decoder"]
    external = onnx_export.export_component(tiny_models, contract, tmp_path / "audio_decoder.onnx")
    assert external == ["audio_decoder.onnx.data"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["audio_decoder.onnx", "audio_decoder.onnx.data"]
    assert (tmp_path / "audio_decoder.onnx").stat().st_size < 200_000 < (tmp_path / external[0]).stat().st_size
    session = ort.InferenceSession(str(tmp_path / "audio_decoder.onnx"), providers=["CPUExecutionProvider"])
    (wave,) = session.run(None, {"audio_codes": np.zeros((1, 3, 4), np.int64)})
    assert wave.shape == (1, 960)


def run(*args):
    return CliRunner().invoke(main, list(args))


def test_unknown_preset(tmp_path):
    result = run("--preset", "huge", "--out", str(tmp_path / "b"), "--engines", "none")
    assert result.exit_code == 1 and "unknown preset 'huge'" in result.output


def test_non_empty_output_needs_force(tmp_path):
    out = tmp_path / "b"
    out.mkdir()
    (out / "precious.txt").write_text("keep me")
    result = run("--preset", "tiny", "--out", str(out), "--engines", "none", "--components", "audio_decoder")
    assert result.exit_code == 1 and "not empty; pass --force" in result.output
    assert (out / "precious.txt").read_text() == "keep me"
    result = run("--preset", "tiny", "--out", str(out), "--engines", "none", "--components", "audio_decoder",
                 "--force")
    assert result.exit_code == 0, result.output
    assert sorted(p.name for p in out.iterdir()) == ["manifest.json", "onnx", "tokenizer.json"]
    assert "audio_decoder" in result.output and "bundle:" in result.output


def test_unwritable_parent(tmp_path):
    result = run("--preset", "tiny", "--out", "/proc/vp-bundle", "--engines", "none")
    assert result.exit_code == 1 and "cannot write" in result.output


def test_mismatched_weights_are_listed(tmp_path, tiny_models):
    from vp.models import save

    save(tiny_models, tmp_path / "w")
    (tmp_path / "w" / "llm.safetensors").write_bytes((tmp_path / "w" / "audio_tokenizer.safetensors").read_bytes())
    result = run("--preset", "tiny", "--weights", str(tmp_path / "w"), "--out", str(tmp_path / "b"),
                 "--engines", "none")
    assert result.exit_code == 1 and "do not match preset tiny" in result.output
    assert "llm: missing blocks.0.attn.wq.weight" in result.output and "more" in result.output
    assert not (tmp_path / "b").exists()


def test_unknown_component_and_bad_sm(tmp_path):
    result = run("--preset", "tiny", "--out", str(tmp_path / "b"), "--components", "llm,vocoder")
    assert result.exit_code == 1 and "unknown component(s) vocoder" in result.output
    result = run("--preset", "tiny", "--out", str(tmp_path / "b"), "--sm", "8x")
    assert result.exit_code == 2 and "compute capabilities" in result.output


def test_failure_midway_leaves_no_bundle(tmp_path, monkeypatch):
    calls = []

    def failing(models, contract, path, precision, heads=True):
        calls.append(contract.component)
        if len(calls) == 2:
            raise ValueError("simulated failure")
        return real(models, contract, path, precision, heads)

    real = bundle_module.export_component
    monkeypatch.setattr(bundle_module, "export_component", failing)
    with pytest.raises(ValueError, match="simulated"):
        export_bundle(ExportConfig(preset="tiny", out=tmp_path / "b", engines="none"))
    assert list(tmp_path.iterdir()) == []  # neither the bundle nor its temporary folder


def test_rtx_without_tensorrt_names_the_pip_command(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "tensorrt_rtx", None)  # makes `import tensorrt_rtx` fail
    result = run("--preset", "tiny", "--out", str(tmp_path / "b"), "--engines", "rtx")
    assert result.exit_code == 1 and "pip install 'vp[rtx]'" in result.output
    assert not (tmp_path / "b").exists()
