"""The shipped demo weights through the runtime: an exported demo bundle draws and sounds what the prompt says.

The prompts are held-out phrasings (never seen in training); the clips are
measured by the evaluator's plain image and audio analysis (vp.training.measure).
"""

import pytest

from vp.runtime.pipeline import Pipeline
from vp.training.measure import measure


@pytest.fixture(scope="module")
def demo(demo_bundle):
    with Pipeline.load(demo_bundle, backend="ort") as pipeline:
        yield pipeline


@pytest.mark.parametrize("prompt, colour, shape", [
    ("one red circle that moves left", "red", "circle"),
    ("a small blue triangle drifting up", "blue", "triangle"),
])
def test_t2v_has_the_prompts_colour_and_sound(demo, prompt, colour, shape):
    result = demo.generate(task="t2v", prompt=prompt, seed=0)
    assert result.frames.shape == (17, 64, 64, 3)
    m = measure(result.frames, result.audio, result.sample_rate)
    assert m.colour == colour
    assert m.pitch_shape == shape  # the tone of the prompt's shape
