import json
import re

from click.testing import CliRunner
from safetensors.numpy import load_file

from vp.training.cli import eval_main, main


def test_help_lists_the_stages():
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for stage in ("video-tokenizer", "audio-tokenizer", "tokens", "video-decoder", "llm", "superres", "figures"):
        assert re.search(rf"^\s+{stage}\s+\w", result.output, re.M), stage


def test_a_stage_trains_and_writes_fp16_weights(tmp_path):
    args = ["audio-tokenizer", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--steps", "2"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    assert "audio tokenizer: pitch within 3%" in result.output
    weights = load_file(str(tmp_path / "out" / "audio_tokenizer.safetensors"))
    assert all(v.dtype.name == "float16" for v in weights.values())
    assert (tmp_path / "out" / "preset.json").is_file()
    assert (tmp_path / "work" / "audio_tokenizer" / "checkpoint.safetensors").is_file()


def test_peak_lr_sets_the_schedule_peak(tmp_path):
    args = ["audio-tokenizer", "--work", str(tmp_path / "work"), "--out", str(tmp_path / "out"), "--steps", "2",
            "--peak-lr", "1e-5"]
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 0, result.output
    log = [json.loads(line) for line in (tmp_path / "work" / "audio_tokenizer" / "log.jsonl").read_text().splitlines()]
    assert 0 < max(r["lr"] for r in log) <= 1e-5  # warm-up of the 1e-5 peak (the recipe's own is 2e-3)
    result = CliRunner().invoke(main, ["tokens", "--work", str(tmp_path / "work"), "--peak-lr", "1e-5"])
    assert result.exit_code == 1 and "--peak-lr applies to stages that train, not tokens" in result.output


def test_a_stage_without_its_inputs_says_which_to_run(tmp_path):
    result = CliRunner().invoke(main, ["tokens", "--work", str(tmp_path), "--out", str(tmp_path / "empty")])
    assert result.exit_code == 1
    assert "video_tokenizer.safetensors is missing: train the stage that makes it first" in result.output
    result = CliRunner().invoke(main, ["llm", "--work", str(tmp_path), "--out", str(tmp_path / "empty")])
    assert result.exit_code == 1 and "run `vp-train tokens` first" in result.output


def test_eval_needs_exactly_one_source(tmp_path):
    result = CliRunner().invoke(eval_main, [])
    assert result.exit_code == 2 and "exactly one of --bundle DIR and --reference" in result.output
    result = CliRunner().invoke(eval_main, ["--reference", "--tasks", "t2v,dance"])
    assert result.exit_code == 2 and "unknown tasks ['dance']" in result.output


def test_eval_writes_per_case_results_and_pairs_a_run_against_them(demo_bundle, tmp_path):
    first = tmp_path / "first.json"
    args = ["--bundle", str(demo_bundle), "--cases", "2", "--tasks", "t2v"]
    result = CliRunner().invoke(eval_main, [*args, "--per-case", str(first)])
    assert result.exit_code == 0, result.output
    assert len(json.loads(first.read_text())["cases"]["t2v colour"]) == 2
    result = CliRunner().invoke(eval_main, [*args, "--against", str(first)])
    assert result.exit_code == 0, result.output
    assert re.search(r"\| t2v direction \| 2 \| (\d+)% \| \1% \| 0 / 0 \|", result.output)  # greedy: the same clips
    result = CliRunner().invoke(eval_main, [*args, "--first", "48", "--against", str(first)])
    assert result.exit_code == 2 and "holds cases 0-1, this run scores 48-49" in result.output
