"""The structure video the stylization task conditions on (numpy only).

The paper stylizes from the optical flow and depth of the input video, from
off-the-shelf estimators (RAFT-style flow, MiDaS-style depth), stacked into
three channels and tokenized by the video tokenizer; the text then chooses
the look. vp encodes that signal as a video:

    red   = 128 + 16 * flow_x   (pixels per frame, inside the moving object)
    green = 128 + 16 * flow_y
    blue  = 255 * nearness      (depth; the demo world's objects are all near)
    black where nothing moves (the background)

`SilhouetteFlow` is the estimator vp ships: it finds the object as the
pixels that stand out from the frame's border colour, and its flow as the
motion of that silhouette's centroid. That is exact for the demo world (one
rigid object on a plain background, what vp.training.world renders) and a
stand-in elsewhere. A deployment with real footage plugs in its own
estimator: any callable frames [T, H, W, 3] uint8 -> structure [T, H, W, 3]
uint8 in the encoding above (a flow network's per-pixel flow in red/green, a
depth network's normalized inverse depth in blue), passed as
`structure_estimator` to `vp.runtime.conditioning.prepare_media`; the model
must be trained on the same estimator's output.
"""

from __future__ import annotations

import numpy as np

MIN_CONTRAST = 40.0  # Euclidean RGB distance from the background below which nothing stands out
FLOW_SCALE = 16.0  # structure-video levels per pixel of flow


def object_coverage(frames: np.ndarray) -> np.ndarray:
    """frames [T, H, W, 3] uint8 -> [T, H, W] float32 in [0, 1]: how much of each pixel is object.

    Per frame, the distance of each pixel's colour from the median colour of
    the frame's border, over the frame's full contrast (its 99.5th percentile
    distance); 0 below half of it, or everywhere when nothing stands out by
    MIN_CONTRAST.
    """
    frames = np.asarray(frames)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[-1] != 3:
        raise ValueError(f"frames: expected [T, H, W, 3] uint8, got {frames.dtype} {frames.shape}")
    cover = np.zeros(frames.shape[:3], np.float32)
    for t, frame in enumerate(frames.astype(np.float32)):
        border = np.concatenate([frame[0], frame[-1], frame[:, 0], frame[:, -1]])
        dist = np.linalg.norm(frame - np.median(border, axis=0), axis=-1)  # (H, W)
        strength = np.percentile(dist, 99.5)
        if strength >= MIN_CONTRAST:
            threshold = max(MIN_CONTRAST, 0.5 * strength)
            cover[t] = np.where(dist > threshold, np.clip(dist / strength, 0, 1), 0)
    return cover


def centroids(cover: np.ndarray) -> np.ndarray:
    """cover [T, H, W] -> [T, 2] (x, y) coverage-weighted centre in pixels, NaN where empty."""
    T, H, W = cover.shape
    area = cover.sum(axis=(1, 2))  # (T,)
    ys, xs = np.mgrid[:H, :W] + 0.5
    with np.errstate(invalid="ignore", divide="ignore"):
        x = (cover * xs).sum(axis=(1, 2)) / area
        y = (cover * ys).sum(axis=(1, 2)) / area
    track = np.stack([x, y], axis=1)
    track[area <= 0] = np.nan
    return track


def flow_of_track(track: np.ndarray) -> np.ndarray:
    """track [T, 2] -> flow [T, 2]: the motion into the next frame (the last frame repeats the one
    before it); 0 where the object is missing in either frame."""
    flow = np.zeros_like(track)
    if len(track) > 1:
        flow[:-1] = track[1:] - track[:-1]
        flow[-1] = flow[-2]
    return np.nan_to_num(flow, nan=0.0)


def structure_video(cover: np.ndarray, flow: np.ndarray) -> np.ndarray:
    """cover [T, H, W] in [0, 1], flow [T, 2] px per frame -> structure [T, H, W, 3] uint8."""
    colour = np.stack([128 + FLOW_SCALE * flow[:, 0], 128 + FLOW_SCALE * flow[:, 1],
                       np.full(len(flow), 255.0)], axis=1)  # (T, 3)
    colour = np.clip(colour, 0, 255)[:, None, None, :]
    return np.round(cover[..., None] * colour).astype(np.uint8)


class SilhouetteFlow:
    """frames [T, H, W, 3] uint8 -> structure [T, H, W, 3] uint8: the object's silhouette coloured by
    the motion of its centroid, at full nearness (see the module docstring)."""

    def __call__(self, frames: np.ndarray) -> np.ndarray:
        cover = object_coverage(frames)
        return structure_video(cover, flow_of_track(centroids(cover)))
