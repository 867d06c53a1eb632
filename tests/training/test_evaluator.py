from dataclasses import replace

import numpy as np
import pytest

from vp.training.evaluator import Output, Report, evaluate
from vp.training.world import COLOURS, HELD_OUT_SEED, World, WorldConfig


class Truth:
    """Answers each held-out case with the world's own clip (restyled in the prompt's colour)."""

    def __init__(self, world):
        self.worlds = world
        self.world = world.config

    def __call__(self, *, task, seed, prompt="", **_):
        clip = self.worlds.clip(HELD_OUT_SEED + seed)
        if task == "stylize":
            colour = next(c for c in COLOURS if f" {c} " in f" {prompt} ")
            clip = self.worlds.render(replace(clip.attributes, colour=colour), seed=HELD_OUT_SEED + seed)
        audio = clip.audio if task in {"t2v", "v2a"} else np.zeros(0, np.float32)
        frames = clip.frames if task != "v2a" else np.zeros((0, 64, 64, 3), np.uint8)
        return Output(frames, audio, self.world.sample_rate, self.world.fps)

    def reconstruct(self, video):
        return video

    def upscale(self, video, prompt, seed):
        clip = self.worlds.clip(HELD_OUT_SEED + seed)
        assert np.array_equal(video, clip.frames)
        hires = World(replace(self.world, height=128, width=128, scale=2))
        return hires.render(clip.attributes, seed=HELD_OUT_SEED + seed).frames


class Noise:
    world = WorldConfig()

    def __init__(self):
        self.rng = np.random.default_rng(0)

    def __call__(self, *, task, **_):
        frames = self.rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
        return Output(frames, self.rng.uniform(-0.5, 0.5, 17000).astype(np.float32), 8000, 8)

    def reconstruct(self, video):
        return video

    def upscale(self, video, prompt, seed):
        return self.rng.integers(0, 256, (17, 128, 128, 3), dtype=np.uint8)


def test_ground_truth_scores_full_marks_through_mp4():
    report = evaluate(Truth(World()), cases=6)
    assert set(report.scores) == {"t2v colour", "t2v direction", "t2v shape", "t2v pitch",
                                  "i2v first-frame PSNR (dB)", "i2v colour kept", "v2a pitch",
                                  "stylize trajectory and colour", "superres beats bicubic"}
    for row, value in report.scores.items():
        assert value >= (30.0 if "dB" in row else 1.0), (row, value)
    assert "| t2v colour | 6 | 100% | >= 85% | yes |" in report.table()


def test_noise_scores_low():
    report = evaluate(Noise(), cases=12, tasks=("t2v", "stylize", "superres"))
    assert report.scores["superres beats bicubic"] == 0.0
    assert report.scores["t2v direction"] <= 0.25
    assert report.scores["stylize trajectory and colour"] == 0.0
    assert report.scores["t2v colour"] <= 0.5


def test_report_table_marks_misses():
    r = Report()
    r.add("t2v shape", [1.0, 0.0])
    assert "| t2v shape | 2 | 50% | >= 60% | no |" in r.table()


def test_paired_counts_the_cases_each_side_alone_got_right():
    base = Report(first=48)
    base.add("t2v direction", [1, 1, 0, 0, 1])
    base.add("i2v first-frame PSNR (dB)", [30.0, 20.0])
    other = Report.from_dict({"first": 48, "cases": {"t2v direction": [1, 0, 1, 1, 1],
                                                     "i2v first-frame PSNR (dB)": [28.0, 26.0]}})
    table = other.paired(base)
    assert "| t2v direction | 5 | 80% | 60% | 1 / 2 |" in table
    assert "| i2v first-frame PSNR (dB) | 2 | 27.0 | 25.0 | - |" in table
    assert Report.from_dict(other.to_dict()).cases == other.cases


def test_paired_refuses_other_cases():
    base, other = Report(first=0), Report(first=48)
    with pytest.raises(ValueError, match=r"the reports start at different cases \(48 and 0\)"):
        other.paired(base)
    base.add("t2v colour", [1, 1])
    shorter = Report(first=0)
    shorter.add("t2v colour", [1])
    with pytest.raises(ValueError, match="t2v colour: 1 cases here, 2 in the base"):
        shorter.paired(base)
