"""Shared fixtures: the tiny preset's models, its exported ONNX bundles and the demo bundle (built once per run)."""

import numpy as np
import pytest


@pytest.fixture(scope="session")
def tiny_models():
    from vp.models import load

    return load("tiny")


def _export_tiny(tmp_path_factory, precision):
    from vp.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundles") / f"tiny-{precision}"
    export_bundle(ExportConfig(preset="tiny", out=out, engines="none", precision=precision))
    return out


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The tiny preset exported to ONNX (fp32, no engines) with the default seed."""
    return _export_tiny(tmp_path_factory, "fp32")


@pytest.fixture(scope="session")
def tiny_bundle_fp16(tmp_path_factory):
    """The same as tiny_bundle with fp16 graphs."""
    return _export_tiny(tmp_path_factory, "fp16")


@pytest.fixture(scope="session")
def demo_bundle(tmp_path_factory):
    """The demo preset (its shipped trained weights) exported to ONNX (fp32, no engines)."""
    from vp.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "demo"
    export_bundle(ExportConfig(preset="demo", out=out, engines="none"))
    return out


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where cuda-python finds an NVIDIA GPU."""
    from vp.runtime.backends.cuda import probe_gpu

    if not any("gpu" in item.keywords for item in items):
        return
    sm, why = probe_gpu()
    if sm is None:
        skip = pytest.mark.skip(reason=f"needs an NVIDIA GPU: {why}")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def media():
    """Inputs for every task at the tiny preset's clip size (64x64, 17 frames, 2.125 s)."""
    rng = np.random.default_rng(0)
    video = rng.integers(0, 256, (17, 64, 64, 3), dtype=np.uint8)
    mask = np.zeros((64, 64), bool)
    mask[16:48, 16:48] = True
    return dict(video=video, image=video[0], audio=rng.uniform(-0.5, 0.5, 34000).astype(np.float32), mask=mask)


@pytest.fixture(scope="session")
def task_inputs(media):
    """task -> the media keyword arguments of a generation of that task."""
    from vp.runtime.vocab import Task

    def inputs(task):
        return {
            Task.TEXT_TO_VIDEO: {}, Task.TEXT_TO_IMAGE: {}, Task.UNCONDITIONAL: {},
            Task.IMAGE_TO_VIDEO: dict(image=media["image"]),
            Task.CONTINUATION: dict(video=media["video"][:9]),
            Task.LONG_VIDEO: dict(video=media["video"]),
            Task.INPAINT: dict(video=media["video"], mask=media["mask"]),
            Task.OUTPAINT: dict(video=media["video"], mask=~media["mask"]),
            Task.VIDEO_TO_AUDIO: dict(video=media["video"]),
            Task.AUDIO_TO_VIDEO: dict(audio=media["audio"]),
            Task.AUDIO_VIDEO_CONTINUATION: dict(video=media["video"][:9], audio=media["audio"]),
            Task.STYLIZATION: dict(video=media["video"]),
        }[Task(task)]

    return inputs
