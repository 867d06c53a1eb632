"""The accuracy gate: teacher-forced agreement through the runtime's paged LLM, and its verdict."""

import numpy as np
import onnx

from vp.calibration.gate import EVAL_ROWS, GateThresholds, teacher_forced, verdict
from vp.export.contracts import contracts


def _paged(path, tiny_models):
    from vp.runtime.backends.ort import OrtPagedLLM

    return OrtPagedLLM(path, contracts(tiny_models.preset)["llm"], "fp32", num_blocks=64, threads=2)


def test_the_fp32_graph_agrees_with_the_reference_everywhere(tiny_models, tiny_llm_graphs, tiny_calibration):
    result = teacher_forced(tiny_models.llm, _paged(tiny_llm_graphs["fp32-heads"], tiny_models), tiny_calibration.held_out,
                            GateThresholds(positions=40), tiny_models.preset.vocab)
    assert result["top1"] == 1.0 and result["kl"] < 1e-6
    assert result["sequences"] == 4 and 0 < result["positions"] <= 4 * 40


def test_a_broken_graph_fails_the_gate(tiny_models, tiny_llm_graphs, tiny_calibration, tmp_path):
    """The same graph with one layer's MLP output weights scrambled: the gate sees it."""
    model = onnx.load(str(tiny_llm_graphs["fp32-heads"]))
    node = next(n for n in model.graph.node if n.name == "/blocks.0/mlp/w_down/MatMul")
    init = next(i for i in model.graph.initializer if i.name == node.input[1])
    w = onnx.numpy_helper.to_array(init)
    init.CopyFrom(onnx.numpy_helper.from_array(np.random.default_rng(0).permutation(w.ravel()).reshape(w.shape) * 50,
                                               init.name))
    onnx.save(model, str(tmp_path / "broken.onnx"))
    thresholds = GateThresholds(positions=40)
    result = teacher_forced(tiny_models.llm, _paged(tmp_path / "broken.onnx", tiny_models), tiny_calibration.held_out,
                            thresholds, tiny_models.preset.vocab)
    gate = verdict(result, None, thresholds)
    assert not gate["passed"] and result["kl"] > thresholds.kl
    assert any("mean KL" in f for f in gate["failures"])


def test_verdict_checks_every_figure():
    thresholds = GateThresholds()
    good = {"top1": 0.99, "kl": 0.01, "positions": 100, "sequences": 4}
    rows = {row: 80.0 for row in EVAL_ROWS}
    assert verdict(good, {"cases": 24, "fp32": rows, "quantized": rows}, thresholds)["passed"]
    bad = verdict({**good, "top1": 0.9}, {"cases": 24, "fp32": rows, "quantized": {**rows, "t2v shape": 70.0}},
                  thresholds)
    assert not bad["passed"]
    assert bad["failures"] == ["top-1 agreement 90.00% < 97%",
                               "t2v shape 70% vs fp32 80% (more than 5 points apart)"]
