"""Shared fixtures: the tiny preset's models and its exported ONNX bundle (built once per run)."""

import pytest


@pytest.fixture(scope="session")
def tiny_models():
    from vp.models import load

    return load("tiny")


@pytest.fixture(scope="session")
def tiny_bundle(tmp_path_factory):
    """The tiny preset exported to ONNX (fp32, no engines) with the default seed."""
    from vp.export.bundle import ExportConfig, export_bundle

    out = tmp_path_factory.mktemp("bundles") / "tiny"
    export_bundle(ExportConfig(preset="tiny", out=out, engines="none"))
    return out
