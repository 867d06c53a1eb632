"""The int8 rewrite of the LLM graph: its numbers against fp32, the kernels ONNX Runtime fuses it
into, the bytes it stores, the forms TensorRT accepts."""

import collections

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from vp.calibration import graph
from vp.calibration.llm import KERNEL_BLOCKS, graph_scales, graph_weights
from vp.calibration.statistics import tensor_scales
from vp.export.contracts import contracts
from vp.export.logit_heads import split_head
from vp.runtime.backends.ort import KERNEL_BLOCK_OPTION, MATMULNBITS_OPTIONS


def test_quantize_weight_is_symmetric_per_output_channel():
    rng = np.random.default_rng(0)
    w = rng.standard_normal((64, 48)).astype(np.float32) * np.linspace(0.01, 3, 48, dtype=np.float32)
    q, scale = graph.quantize_weight(w)
    assert q.dtype == np.int8 and scale.shape == (48,)
    assert np.abs(q).max(0).tolist() == [127] * 48  # every column uses the full range
    assert (np.abs(w - q * scale) <= scale / 2 + 1e-7).all()


@pytest.fixture(scope="module")
def quantized(tiny_models, tiny_llm_graphs, tiny_calibration, tmp_path_factory):
    """(flavour, target) -> path of the tiny LLM graph rewritten to int8 (fp32 graph; target:
    "cpu" or "tensorrt")."""
    folder = tmp_path_factory.mktemp("int8")
    model = onnx.load(str(tiny_llm_graphs["fp32"]))
    weights = graph_weights(tiny_models.llm)
    scales = graph_scales(tensor_scales(tiny_models.llm, tiny_calibration.calibration[:3], "max"))
    out = {}
    for flavour, act in (("int8-wo", None), ("int8", scales)):
        for target in ("cpu", "tensorrt"):
            path = folder / f"{flavour}-{target}.onnx"
            rewritten = graph.quantize_graph(model, weights, act, tensorrt=target == "tensorrt")
            split_head(rewritten, tiny_models.preset.vocab.heads())  # as vp.calibration.llm.quantize does
            onnx.save(rewritten, str(path))
            out[flavour, target] = path
    return out


def _prefill_logits(path, tiny_models, sequence, kernel_block=None):
    from vp.runtime.backends.base import LLMBatch
    from vp.runtime.backends.ort import OrtPagedLLM

    contract = contracts(tiny_models.preset)["llm"]
    llm = OrtPagedLLM(path, contract, "fp32", num_blocks=8, threads=2, kernel_block=kernel_block)
    n = sequence.prefix_len
    positions = np.arange(n, dtype=np.int64)[None]
    return llm.forward(LLMBatch(input_ids=sequence.ids[None, :n], input_embeds=sequence.embeds[None, :n],
                                embed_mask=sequence.embed_mask[None, :n], position_ids=positions,
                                block_table=np.arange(8, dtype=np.int64)[None],
                                context_lens=np.array([0], np.int64), prefix_lens=np.array([n], np.int64),
                                head=np.array([0], np.int64), slots=positions))[0]


def _fused(path) -> collections.Counter:
    import tempfile

    with tempfile.TemporaryDirectory() as scratch:
        options = ort.SessionOptions()
        options.log_severity_level = 3
        for key, value in MATMULNBITS_OPTIONS.items():  # the ort backend's, at the block tried first
            options.add_session_config_entry(key, value)
        options.add_session_config_entry(KERNEL_BLOCK_OPTION, str(KERNEL_BLOCKS[0]))
        options.optimized_model_filepath = f"{scratch}/optimized.onnx"
        ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
        return collections.Counter(n.op_type for n in _nodes(onnx.load(options.optimized_model_filepath).graph))


def _nodes(graph):
    """The graph's nodes and those of its subgraphs (the output heads' If branches)."""
    for node in graph.node:
        yield node
        for attribute in node.attribute:
            if attribute.type == onnx.AttributeProto.GRAPH:
                yield from _nodes(attribute.g)


@pytest.mark.parametrize("flavour, kernel", [("int8-wo", "MatMulNBits"), ("int8", "MatMulIntegerToFloat")])
def test_onnx_runtime_fuses_every_weight_matmul_into_an_integer_kernel(quantized, tiny_models, flavour, kernel):
    ops = _fused(quantized[flavour, "cpu"])
    # every projection (wqkv, wo, w_gate_up, w_down: vp.export.llm_graph fuses) and both output heads
    assert ops[kernel] == 4 * tiny_models.preset.llm.n_layers + 2
    assert ops["DequantizeLinear"] == 0  # no weight is dequantized at run time


@pytest.mark.parametrize("flavour, tolerance", [("int8-wo", 0.03), ("int8", 0.08)])
def test_logits_follow_fp32(quantized, tiny_models, tiny_llm_graphs, tiny_calibration, flavour, tolerance):
    """Max |logit error| relative to the logits' range; the TensorRT form (DQ -> Gather lookup)
    computes the same as the CPU form."""
    s = tiny_calibration.held_out[0]
    reference = _prefill_logits(tiny_llm_graphs["fp32-heads"], tiny_models, s)
    spread = reference.max() - reference.min()
    for target in ("cpu", "tensorrt"):
        logits = _prefill_logits(quantized[flavour, target], tiny_models, s)
        assert np.abs(logits - reference).max() / spread < tolerance
    cpu, trt = (_prefill_logits(quantized[flavour, t], tiny_models, s) for t in ("cpu", "tensorrt"))
    assert np.abs(cpu - trt).max() / spread < 1e-3


def test_int8_graphs_store_int8(quantized, tiny_llm_graphs):
    fp32 = tiny_llm_graphs["fp32"].stat().st_size
    assert quantized["int8-wo", "cpu"].stat().st_size < 0.6 * fp32  # table stored twice, the rest once
    model = onnx.load(str(quantized["int8", "tensorrt"]))
    onnx.checker.check_model(model)
    assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) == graph.OPSET
    kinds = {i.name: i.data_type for i in model.graph.initializer}
    assert kinds["blocks.0.attn.wqkv.weight_int8"] == onnx.TensorProto.INT8
    assert kinds["blocks.0.attn.wqkv.input_zero_point"] == onnx.TensorProto.INT8
    # TensorRT reads an int8 constant only through a DQ: every int8 initializer feeds DequantizeLinear
    readers = collections.defaultdict(set)
    for node in model.graph.node:
        for name in node.input:
            readers[name].add(node.op_type)
    for name, kind in kinds.items():
        if kind == onnx.TensorProto.INT8 and not name.endswith("zero_point"):
            assert readers[name] == {"DequantizeLinear"}, name


def test_fp16_graph_gets_fp16_scales(tiny_models, tiny_llm_graphs):
    model = graph.quantize_graph(onnx.load(str(tiny_llm_graphs["fp16"])), graph_weights(tiny_models.llm),
                                 tensorrt=True)
    onnx.checker.check_model(model)
    scale = next(i for i in model.graph.initializer if i.name == "head.weight_scale")
    assert scale.data_type == onnx.TensorProto.FLOAT16


def test_fused_matmuls_take_the_scale_of_the_tensor_they_read(tiny_models, tiny_calibration):
    scales = tensor_scales(tiny_models.llm, tiny_calibration.calibration[:2], "max")
    assert scales["blocks.1.attn.wq"] == scales["blocks.1.attn.wk"] == scales["blocks.1.attn.wv"]
    assert scales["blocks.1.mlp.w_gate"] == scales["blocks.1.mlp.w_up"]
    mapped = graph_scales(scales)
    assert set(mapped) == set(graph_weights(tiny_models.llm))  # one scale per graph MatMul
    assert mapped["blocks.1.attn.wqkv"] == scales["blocks.1.attn.wq"]
    assert mapped["blocks.1.mlp.w_gate_up"] == scales["blocks.1.mlp.w_up"]
    assert mapped["blocks.1.mlp.w_down"] == scales["blocks.1.mlp.w_down"]


def test_bad_weights_are_refused(tiny_models, tiny_llm_graphs):
    model = onnx.load(str(tiny_llm_graphs["fp32"]))
    weights = graph_weights(tiny_models.llm)
    with pytest.raises(ValueError, match="no float weight for the graph's MatMul.*blocks.0.attn.wqkv"):
        graph.quantize_graph(model, {k: v for k, v in weights.items() if k != "blocks.0.attn.wqkv"})
    weights["head"] = weights["head"][:, :10]
    with pytest.raises(ValueError, match="weight of head: the graph has"):
        graph.quantize_graph(model, weights)


def test_the_kernel_block_reaches_onnx_runtime(quantized, tiny_models, tiny_llm_graphs, tiny_calibration):
    """The CPU kernels quantize activations per K block: 32 is ONNX Runtime's default (the same
    logits as no block named), 128 other logits, both as close to fp32 as the int8-wo tolerance."""
    s = tiny_calibration.held_out[0]
    path = quantized["int8-wo", "cpu"]
    logits = {b: _prefill_logits(path, tiny_models, s, kernel_block=b) for b in (None, 32, 128)}
    np.testing.assert_array_equal(logits[32], logits[None])
    assert np.abs(logits[128] - logits[32]).max() > 0
    reference = _prefill_logits(tiny_llm_graphs["fp32-heads"], tiny_models, s)
    for b in (32, 128):
        assert np.abs(logits[b] - reference).max() / (reference.max() - reference.min()) < 0.03
