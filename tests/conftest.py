"""Shared fixtures: the tiny preset's models and its exported ONNX bundle (built once per run)."""

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


def pytest_collection_modifyitems(config, items):
    """Tests marked `gpu` run only where cuda-python finds an NVIDIA GPU."""
    from vp.runtime.backends.trt import gpu_compute_capability

    if any("gpu" in item.keywords for item in items) and gpu_compute_capability() is None:
        skip = pytest.mark.skip(reason="needs an NVIDIA GPU (cuda-python found none)")
        for item in items:
            if "gpu" in item.keywords:
                item.add_marker(skip)
