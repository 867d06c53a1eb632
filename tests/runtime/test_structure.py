import numpy as np
import pytest

from vp.runtime.structure import SilhouetteFlow, centroids, flow_of_track, object_coverage
from vp.training.world import DIRECTIONS, SPEEDS, World


@pytest.mark.parametrize("seed", [0, 1, 2, 3, 4])
def test_estimated_structure_matches_the_worlds_exact_one(seed):
    clip = World().clip(seed)
    estimated = SilhouetteFlow()(clip.frames)
    assert estimated.shape == clip.structure.shape and estimated.dtype == np.uint8
    # same silhouette (anti-aliased edge pixels aside) and the same flow colour inside it
    inside = clip.structure[..., 2] > 200
    assert (estimated[..., 2][inside] > 200).mean() > 0.97
    diff = np.abs(estimated[inside].astype(int) - clip.structure[inside].astype(int))
    assert np.median(diff[:, :2]) <= 2
    assert (estimated[~(clip.structure[..., 2] > 0)] == 0).all()  # black background


def test_flow_is_the_centroid_motion():
    clip = World().clip(6)
    a = clip.attributes
    flow = flow_of_track(centroids(object_coverage(clip.frames)))
    expected = np.array(DIRECTIONS[a.direction]) * SPEEDS[a.speed]
    assert np.allclose(flow[0], expected, atol=0.1)


def test_a_plain_video_has_no_structure():
    frames = np.full((5, 32, 32, 3), 90, np.uint8)
    assert not SilhouetteFlow()(frames).any()


def test_bad_frames_are_refused():
    with pytest.raises(ValueError, match=r"\[T, H, W, 3\] uint8"):
        SilhouetteFlow()(np.zeros((5, 32, 32), np.float32))
