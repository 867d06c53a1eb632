"""The LLM graph's output heads (vp.export.logit_heads): each head computes its columns of the whole
projection, the narrower one zero-padded, with the table stored once; TensorRT-RTX builds the If."""

import numpy as np
import onnx
import onnxruntime as ort
import pytest
from onnx import TensorProto, helper, numpy_helper

from vp.export.contracts import contracts
from vp.engines.contract import is_kv_plane
from vp.export.logit_heads import split_head
from vp.export.onnx_export import export_component

# fp32 on ONNX Runtime's CPU provider: each logit is the same dot product either way (measured
# bit for bit on the tiny preset); the tolerance allows another kernel's blocking
ATOL = 1e-6


def _session(path_or_model):
    options = ort.SessionOptions()
    options.log_severity_level = 3
    source = path_or_model.SerializeToString() if isinstance(path_or_model, onnx.ModelProto) else str(path_or_model)
    return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])


def _prefill_feeds(session, preset, tokens=9):
    planes = {i.name: np.zeros([2 if d == "num_blocks" else d for d in i.shape], np.float32)
              for i in session.get_inputs() if is_kv_plane(i.name)}
    ids = np.random.default_rng(0).integers(0, preset.llm.vocab_size, (1, tokens))
    return dict(input_ids=ids, input_embeds=np.zeros((1, tokens, preset.llm.d_model), np.float32),
                embed_mask=np.zeros((1, tokens), bool), position_ids=np.arange(tokens)[None],
                block_table=np.array([[0]]), context_lens=np.array([0]), prefix_lens=np.array([4]), **planes)


def test_each_head_is_its_columns_of_the_whole_projection(tiny_models, tiny_bundle, tmp_path):
    preset = tiny_models.preset
    whole = tmp_path / "whole.onnx"
    export_component(tiny_models, contracts(preset)["llm"], whole, heads=False)
    whole_session, heads_session = _session(whole), _session(tiny_bundle / "onnx" / "llm.onnx")
    feeds = _prefill_feeds(whole_session, preset)
    (reference,) = whole_session.run(["logits"], feeds)
    assert reference.shape == (1, preset.llm.vocab_size)
    for index, (low, high) in enumerate(preset.vocab.heads()):
        (logits,) = heads_session.run(["logits"], {**feeds, "head": np.array([index])})
        assert logits.shape == (1, preset.vocab.head_width)
        np.testing.assert_allclose(logits[:, :high - low], reference[:, low:high], rtol=0, atol=ATOL)


def test_the_float_table_is_stored_once(tiny_models, tiny_bundle):
    """The heads slice the table the token lookup reads; no initializer holds a copy of columns."""
    model = onnx.load(str(tiny_bundle / "onnx" / "llm.onnx"))
    llm = tiny_models.preset.llm
    shapes = [tuple(i.dims) for i in model.graph.initializer]
    assert shapes.count((llm.d_model, llm.vocab_size)) == 1
    assert (llm.d_model, tiny_models.preset.vocab.head_width) not in shapes


def _toy(dtype=TensorProto.FLOAT):
    """x [batch, 8] @ table [8, 40] -> Cast -> logits [batch, 40], and the table."""
    table = np.random.default_rng(1).standard_normal((8, 40)).astype(np.float32)
    nodes = [helper.make_node("MatMul", ["x", "table"], ["product"], name="/MatMul"),
             helper.make_node("Cast", ["product"], ["logits"], to=TensorProto.FLOAT)]
    graph = helper.make_graph(nodes, "toy", [helper.make_tensor_value_info("x", dtype, ["batch", 8])],
                              [helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 40])],
                              [numpy_helper.from_array(table, "table")])
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)]), table


def test_a_narrower_head_is_zero_padded():
    model, table = _toy()
    split_head(model, ((4, 24), (24, 30)))
    onnx.checker.check_model(model, full_check=True)
    session = _session(model)
    x = np.random.default_rng(2).standard_normal((3, 8)).astype(np.float32)
    wide, = session.run(None, {"x": x, "head": np.array([0])})
    narrow, = session.run(None, {"x": x, "head": np.array([1])})
    assert wide.shape == narrow.shape == (3, 20)
    np.testing.assert_allclose(wide, x @ table[:, 4:24], rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(narrow[:, :6], x @ table[:, 24:30], rtol=1e-5, atol=1e-5)
    assert not narrow[:, 6:].any()


def test_one_head_needs_no_if():
    model, table = _toy()
    split_head(model, ((4, 24),))
    assert "If" not in {n.op_type for n in model.graph.node}
    x = np.ones((1, 8), np.float32)
    logits, = _session(model).run(None, {"x": x, "head": np.array([0])})
    np.testing.assert_allclose(logits, x @ table[:, 4:24], rtol=1e-5, atol=1e-5)


def test_bad_graphs_and_heads_are_refused():
    with pytest.raises(ValueError, match="one or two output heads, got 3"):
        split_head(_toy()[0], ((0, 8), (8, 16), (16, 24)))
    model, _ = _toy()
    model.graph.node[0].op_type = "Add"
    with pytest.raises(ValueError, match="logits do not come from a MatMul"):
        split_head(model, ((0, 8),))


def test_tensorrt_rtx_builds_the_padded_if(tmp_path):
    """One If whose branches differ in width, or nested Ifs, fail TensorRT-RTX 1.7's build (a Myelin
    check); equal widths by padding build."""
    from vp.engines.builder import EngineFromOnnx
    from vp.engines.contract import Contract, Profile, TensorSpec

    pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is installed by the test extras (vp[rtx])")
    model, _ = _toy(TensorProto.FLOAT)
    split_head(model, ((4, 24), (24, 30)))
    onnx.save(model, str(tmp_path / "toy.onnx"))
    contract = Contract("toy", (TensorSpec("x", "float", ("batch", 8), ""), TensorSpec("head", "int64", (1,), "")),
                        (TensorSpec("logits", "float32", ("batch", 20), ""),),
                        (Profile("main", {"batch": (1, 2, 4)}),))
    record = EngineFromOnnx(tmp_path / "toy.onnx", contract, flavour="rtx", compute_capabilities=(89,)).build(
        tmp_path / "toy.engine")
    assert record.bytes > 0
