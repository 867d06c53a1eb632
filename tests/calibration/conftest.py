"""The tiny preset's calibration set and exported LLM graphs (built once per run)."""

import pytest


@pytest.fixture(scope="session")
def tiny_calibration(tiny_models):
    from vp.calibration.data import CalibrationConfig, calibration_set

    return calibration_set(tiny_models, CalibrationConfig(sequences=9, held_out=4))


@pytest.fixture(scope="session")
def tiny_llm_graphs(tiny_models, tmp_path_factory):
    """float type -> the tiny LLM exported at it (unquantized, its output projection whole, as
    vp.calibration quantizes it), and "fp32-heads" -> the fp32 graph as a bundle has it (split
    into the output heads: what the runtime runs)."""
    from vp.export.contracts import contracts
    from vp.export.onnx_export import export_component

    folder = tmp_path_factory.mktemp("llm-graphs")
    contract = contracts(tiny_models.preset)["llm"]
    out = {}
    for float_type in ("fp32", "fp16"):
        out[float_type] = folder / f"llm-{float_type}.onnx"
        export_component(tiny_models, contract, out[float_type], float_type, heads=False)
    out["fp32-heads"] = folder / "llm-fp32-heads.onnx"
    export_component(tiny_models, contract, out["fp32-heads"], "fp32")
    return out
