"""`vp soak`: mixed generations in one process leave no memory growth, descriptors, threads or files
behind; and the soak sees such leaks when there are some."""

import pytest
from click.testing import CliRunner

from vp.runtime import soak
from vp.runtime.cli import main


def test_a_round_of_every_task_leaves_nothing_behind(tiny_bundle, tmp_path):
    """One round after the two warm-up rounds the soak documents (docs/reliability.md): after one, the
    LLM's pool, which grows to the blocks in use, and the sessions' memory may not have settled."""
    report = soak.run_soak(soak.SoakConfig(bundle=str(tiny_bundle), generations=12, warmup=24, backend="ort"),
                           tmp_path)
    assert report["tasks"] == dict.fromkeys(soak.SOAK_TASKS, 3)
    assert report["leftover_files"] == [] and report["new_temp_entries"] == []
    assert sorted(p.name for p in tmp_path.iterdir()) == list(soak._Round.OUTPUTS)  # every kind was written
    assert report["fds"]["end"] == report["fds"]["after_warmup"]
    assert report["threads"]["end"] == report["threads"]["after_warmup"]
    assert abs(report["rss_mb"]["growth_share"]) < 0.05


def test_the_soak_sees_leaks(tiny_bundle, tmp_path, monkeypatch):
    """A round that leaves a descriptor open and a temporary file behind shows up in the report."""
    leaked = []
    run = soak._Round.run

    def leaky(self, task, seed):
        run(self, task, seed)
        leaked.append(open(self.out / f".soak.mp4.{seed}.partial", "w"))

    monkeypatch.setattr(soak._Round, "run", leaky)
    try:
        report = soak.run_soak(soak.SoakConfig(bundle=str(tiny_bundle), generations=3, warmup=1, backend="ort"),
                               tmp_path)
    finally:
        for f in leaked:
            f.close()
    assert report["fds"]["end"] - report["fds"]["after_warmup"] == 3
    assert report["leftover_files"] == [f".soak.mp4.{seed}.partial" for seed in range(4)]


def test_cli_and_bad_options(tiny_bundle, tmp_path):
    result = CliRunner().invoke(main, ["soak", "--bundle", str(tiny_bundle), "--generations", "0"])
    assert result.exit_code == 1 and "need generations >= 1" in result.output
    result = CliRunner().invoke(main, ["soak", "--bundle", str(tiny_bundle), "--out", str(tmp_path / "missing")])
    assert result.exit_code == 1 and "does not exist" in result.output
    result = CliRunner().invoke(main, ["soak", "--bundle", str(tiny_bundle), "--json", str(tmp_path / "no" / "s.json")])
    assert result.exit_code == 1 and f"output folder {tmp_path / 'no'} does not exist" in result.output
    out = tmp_path / "soak.json"
    result = CliRunner().invoke(main, ["soak", "--bundle", str(tiny_bundle), "--generations", "1", "--warmup", "0",
                                       "--backend", "ort", "--json", str(out)])
    assert result.exit_code == 0, result.output
    assert "soak: 1 generations after 0 warm-up" in result.output and out.is_file()


def test_open_fds_counts_a_new_descriptor(tmp_path):
    before = soak.open_fds()
    if before is None:
        pytest.skip("no /proc/self/fd or /dev/fd here")
    with open(tmp_path / "f", "w"):
        assert soak.open_fds() == before + 1
