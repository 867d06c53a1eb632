"""`vp generate` and `vp info`: real files out, clear errors for bad input."""

import os

import av
import numpy as np
import pytest
from click.testing import CliRunner

from vp.runtime import media
from vp.runtime.cli import main


def run(*args):
    return CliRunner().invoke(main, [str(a) for a in args])


def test_generate_writes_a_clip_a_real_decoder_reads(tiny_bundle, tmp_path):
    out = tmp_path / "fox.mp4"
    result = run("generate", "--bundle", tiny_bundle, "a red fox", "-o", out, "--seed", 1)
    assert result.exit_code == 0, result.output
    assert "backend ort" in result.output
    with av.open(str(out)) as container:
        assert [s.codec_context.name for s in container.streams] == ["h264", "aac"]
        assert sum(1 for _ in container.decode(video=0)) == 17
        assert abs(float(container.duration / av.time_base) - 2.125) < 0.15


def test_samples_image_and_audio_outputs(tiny_bundle, tmp_path):
    result = run("generate", "--bundle", tiny_bundle, "--task", "t2i", "a fox", "-o", tmp_path / "fox.png",
                 "--samples", 2)
    assert result.exit_code == 0, result.output
    assert media.read_image(tmp_path / "fox-1.png", (64, 64)).shape == (64, 64, 3)
    clip = media.write_mp4(tmp_path / "in.mp4", np.full((17, 64, 64, 3), 90, np.uint8), 8)
    result = run("generate", "--bundle", tiny_bundle, "--task", "v2a", "--video", clip, "-o", tmp_path / "a.wav")
    assert result.exit_code == 0, result.output
    assert abs(len(media.read_audio(tmp_path / "a.wav", 16000)) - 34000) < 10


def test_long_video_and_inpaint_with_a_box(tiny_bundle, tmp_path):
    result = run("generate", "--bundle", tiny_bundle, "--task", "long", "--seconds", 3, "a fox", "-o",
                 tmp_path / "long.mp4", "--temperature", 0)
    assert result.exit_code == 0, result.output
    assert media.read_video(tmp_path / "long.mp4", (64, 64), 8).shape[0] == 25
    result = run("generate", "--bundle", tiny_bundle, "--task", "inpaint", "--video", tmp_path / "long.mp4",
                 "--box", "16,16,48,48", "a fox", "-o", tmp_path / "fill.mp4")
    assert result.exit_code == 0, result.output


@pytest.mark.parametrize("args,message", [
    (["--bundle", "/nonexistent/bundle", "fox"], "does not exist"),
    (["--task", "dance", "fox"], "Invalid value for '--task'"),
    (["--task", "i2v", "fox"], "needs an image"),
    (["--task", "i2v", "--image", "/nonexistent.png", "fox"], "--image /nonexistent.png does not exist"),
    (["--task", "i2v", "--image", "DIR", "fox"], "is a folder; give a file"),
    (["--task", "t2v", "fox", "-o", "fox.gif"], "writes .mp4"),
    (["--box", "1,2,3", "fox"], "x0,y0,x1,y1"),
    (["--task", "inpaint", "--video", "FILE", "--box", "40,40,20,60", "fox"],
     "--box 40,40,20,60: expected 0 <= x0 < x1 <= 64 and 0 <= y0 < y1 <= 64"),
    (["--task", "inpaint", "--video", "FILE", "--box", "0,0,65,10", "fox"], "expected 0 <= x0 < x1 <= 64"),
    (["--seconds", "3", "fox"], "--seconds sets the length of a long video: use it with --task long"),
    (["--task", "t2v", "--video", "FILE", "fox"], "task t2v does not use video"),
    (["--task", "v2a", "--video", "FILE", "--audio", "FILE", "-o", "OUT.wav"], "task v2a does not use audio"),
    (["--task", "t2v", ""], "task t2v needs a prompt"),
    (["--task", "uncond", "fox"], "task uncond takes no prompt"),
    (["--cfg", "inf", "fox"], "cfg_scale must be a finite number, got inf"),
    (["--samples", "10000", "fox"], "the LLM's engine profile holds 1024 blocks"),
    (["fox", "-o", "DIR"], "is a directory"),
    (["fox", "-o", "DIR/missing/x.mp4"], "output folder"),
])
def test_bad_input(tiny_bundle, tmp_path, args, message):
    (tmp_path / "folder.mp4").mkdir()
    args = [str(a).replace("FILE", str(tiny_bundle / "manifest.json")).replace("DIR", str(tmp_path / "folder.mp4"))
            .replace("OUT", str(tmp_path / "x")) for a in args]
    if "--bundle" not in args:
        args = ["--bundle", tiny_bundle, *args]
    if "-o" not in args:
        args = [*args, "-o", tmp_path / "x.mp4"]
    result = run("generate", *args)
    assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "x.mp4").exists()


def test_an_output_that_is_a_folder_or_read_only(tiny_bundle, tmp_path):
    (tmp_path / "out.mp4").mkdir()
    result = run("generate", "--bundle", tiny_bundle, "fox", "-o", tmp_path / "out.mp4")
    assert result.exit_code == 2 and "is a directory" in result.output
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        result = run("generate", "--bundle", tiny_bundle, "fox", "-o", locked / "x.mp4")
        if not os.access(locked, os.W_OK):  # (root may write anywhere)
            assert result.exit_code == 1 and "cannot be written (permission denied)" in result.output
    finally:
        locked.chmod(0o700)


def test_vp_cache_pointing_at_a_file(tmp_path, monkeypatch):
    (tmp_path / "cache").write_text("")
    monkeypatch.setenv("VP_CACHE", str(tmp_path / "cache"))
    result = run("generate", "fox", "-o", tmp_path / "x.mp4")
    assert result.exit_code == 1 and "is a file; point it at a folder" in result.output


def test_unreadable_input_file(tiny_bundle, tmp_path):
    (tmp_path / "bad.png").write_text("not an image")
    result = run("generate", "--bundle", tiny_bundle, "--task", "i2v", "--image", tmp_path / "bad.png", "fox",
                 "-o", tmp_path / "x.mp4")
    assert result.exit_code == 1 and "bad.png: cannot" in result.output


def test_long_prompt_is_truncated_with_a_warning(tiny_bundle, tmp_path):
    with pytest.warns(UserWarning, match="truncated to 64"):
        result = run("generate", "--bundle", tiny_bundle, "--task", "t2i", " ".join(["fox"] * 100), "-o",
                     tmp_path / "x.png")
    assert result.exit_code == 0, result.output


def test_info(tiny_bundle):
    result = run("info", "--bundle", tiny_bundle)
    assert result.exit_code == 0, result.output
    assert "preset tiny" in result.output and "llm" in result.output and "t2v: " in result.output
    assert "output heads (logits a call computes): visual ids [256, 1280), audio ids [1280, 2304)" in result.output
    result = run("info", "--bundle", "/nonexistent")
    assert result.exit_code == 1 and "does not exist" in result.output


def test_default_bundle_is_exported_on_first_use(tmp_path, monkeypatch):
    monkeypatch.setenv("VP_CACHE", str(tmp_path / "cache"))
    result = run("generate", "--task", "t2i", "a fox", "-o", tmp_path / "fox.png")
    assert result.exit_code == 0, result.output
    exported = list((tmp_path / "cache" / "bundles").glob("demo-*/manifest.json"))  # named for the weights' digest
    assert len(exported) == 1, exported
    assert (tmp_path / "fox.png").is_file()
    result = run("generate", "--task", "t2i", "a fox", "-o", tmp_path / "fox2.png")
    assert result.exit_code == 0 and "first use" not in result.output  # exported once
