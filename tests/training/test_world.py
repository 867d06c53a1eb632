import numpy as np
import pytest

from vp.training.captions import HELD_OUT_TEMPLATES, TRAIN_TEMPLATES, caption, training_caption
from vp.training.measure import measure
from vp.training.world import COLOURS, DIRECTIONS, FREE_FRAMES, PITCH_HZ, SHAPES, SPEEDS, World, WorldConfig


def test_same_seed_same_clip_and_seeds_differ():
    a, b, c = World().clip(7), World().clip(7), World().clip(8)
    assert np.array_equal(a.frames, b.frames) and np.array_equal(a.audio, b.audio)
    assert np.array_equal(a.structure, b.structure)
    assert not np.array_equal(a.frames, c.frames)


def test_clip_shapes_and_types():
    clip = World().clip(0)
    assert clip.frames.shape == (17, 64, 64, 3) and clip.frames.dtype == np.uint8
    assert clip.structure.shape == (17, 64, 64, 3) and clip.structure.dtype == np.uint8
    assert clip.audio.shape == (17000,) and clip.audio.dtype == np.float32
    assert np.abs(clip.audio).max() <= 1


def test_every_attribute_value_is_drawn():
    seen = [World().attributes(s) for s in range(400)]
    assert {a.shape for a in seen} == set(SHAPES)
    assert {a.colour for a in seen} == set(COLOURS)
    assert {a.direction for a in seen} == set(DIRECTIONS)


def test_object_moves_in_its_direction_until_the_first_bounce():
    world = World()
    for seed in range(60):
        clip = world.clip(seed)
        a = clip.attributes
        step = np.array(DIRECTIONS[a.direction]) * SPEEDS[a.speed]
        assert np.allclose(clip.track[FREE_FRAMES] - clip.track[0], FREE_FRAMES * step)
        assert not clip.bounces or clip.bounces[0] >= FREE_FRAMES


def test_bounce_reverses_and_clicks():
    world = World()
    clip = next(c for c in (world.clip(s) for s in range(200)) if c.bounces)
    t = int(np.ceil(clip.bounces[0]))
    before = clip.track[t - 1] - clip.track[t - 2]
    after = clip.track[t + 1] - clip.track[t]
    assert np.dot(before, after) < 0  # the motion reversed
    sr = world.config.sample_rate
    at = round(clip.bounces[0] / world.config.fps * sr)
    tone_only = world.render(clip.attributes).audio  # same clip, click noise of seed 0
    assert np.abs(clip.audio[at:at + 60]).max() > 0.45  # the click stands above the 0.3 tone
    assert np.abs(tone_only[at:at + 60]).max() > 0.45


def test_measured_attributes_equal_the_caption():
    world = World()
    for seed in range(120):
        clip = world.clip(seed)
        m = measure(clip.frames, clip.audio, world.config.sample_rate)
        a = clip.attributes
        assert (m.colour, m.direction, m.shape, m.pitch_shape) == (a.colour, a.direction, a.shape, a.shape), seed
        assert abs(m.pitch_hz - PITCH_HZ[a.shape]) / PITCH_HZ[a.shape] < 0.01


def test_scale_renders_the_same_clip_larger():
    low = World().clip(11)
    high = World(WorldConfig(height=128, width=128, scale=2)).render(low.attributes, seed=11)
    assert high.frames.shape == (17, 128, 128, 3)
    m_low = measure(low.frames, None, 8000)
    m_high = measure(high.frames, None, 8000)
    assert (m_high.colour, m_high.direction, m_high.shape) == (m_low.colour, m_low.direction, m_low.shape)
    assert np.allclose(m_high.track / 2, m_low.track, atol=0.3)


def test_structure_is_the_silhouette_coloured_by_flow():
    clip = World().clip(3)
    a = clip.attributes
    inside = clip.structure[..., 2] > 128  # full depth inside the object
    assert np.array_equal(inside, np.any(clip.frames != clip.frames[0, 0, 0], axis=-1) & inside)
    dx, dy = DIRECTIONS[a.direction]
    red = clip.structure[0][inside[0]][:, 0].astype(int)
    expected = 128 + 16 * dx * SPEEDS[a.speed]
    assert np.median(red) == pytest.approx(expected, abs=2)


def test_captions_name_the_attributes():
    a = World().attributes(5)
    rng = np.random.default_rng(0)
    for _ in range(20):
        text = training_caption(a, rng)
        assert a.colour in text and a.direction in text
    assert not set(HELD_OUT_TEMPLATES) & set(TRAIN_TEMPLATES)
    assert caption(a, HELD_OUT_TEMPLATES[1]) == f"one {a.colour} {a.shape} that moves {a.direction}"
