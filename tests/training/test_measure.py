import numpy as np
import pytest

from vp.training.measure import measure, pitch, psnr
from vp.training.world import COLOURS, DIRECTIONS, SHAPES, World


def test_noise_scores_at_chance():
    """Random frames and sound against uniformly drawn captions: each score near 1 / classes."""
    world, rng = World(), np.random.default_rng(0)
    n = 300
    hits = {"colour": 0, "direction": 0, "shape": 0, "pitch": 0}
    for seed in range(n):
        a = world.attributes(seed)
        frames = rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
        m = measure(frames, rng.uniform(-1, 1, 17000).astype(np.float32), 8000)
        hits["colour"] += m.colour == a.colour
        hits["direction"] += m.direction == a.direction
        hits["shape"] += m.shape == a.shape
        hits["pitch"] += m.pitch_shape == a.shape
    # binomial 3-sigma bands around chance (n = 300)
    for name, classes in (("colour", len(COLOURS)), ("shape", len(SHAPES)), ("pitch", len(SHAPES))):
        p = 1 / classes
        assert abs(hits[name] / n - p) < 3 * np.sqrt(p * (1 - p) / n) + 0.02, (name, hits[name])
    assert hits["direction"] / n <= 1 / len(DIRECTIONS) + 0.1


def test_blank_frames_and_silence_measure_nothing():
    m = measure(np.full((17, 64, 64, 3), 40, np.uint8), np.zeros(17000, np.float32), 8000)
    assert (m.colour, m.direction, m.shape, m.pitch_hz) == (None, None, None, None)
    assert np.isnan(m.track).all()


def test_pitch_of_a_pure_tone():
    t = np.arange(16000) / 8000
    assert pitch(np.sin(2 * np.pi * 437.0 * t), 8000) == pytest.approx(437.0, rel=1e-3)


def test_psnr():
    a = np.zeros((4, 4, 3), np.uint8)
    b = a.copy()
    b[0, 0, 0] = 255
    assert psnr(a, b) == pytest.approx(10 * np.log10(48), rel=1e-9)
    assert psnr(a, a) == float("inf")
    with pytest.raises(ValueError, match="shapes differ"):
        psnr(a, a[:2])


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\] uint8"):
        measure(np.zeros((17, 64, 64), np.uint8), None, 8000)
