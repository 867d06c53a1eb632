"""Side by side: onnxruntime-genai and llama.cpp decoding an LLM of the small preset's shape, on this machine.

    pip install --target DIR onnxruntime-genai==0.18.0 transformers --no-deps   # never into vp's env
    pip install --target DIR llama-cpp-python==0.3.36 gguf diskcache --no-deps  # for --llama-cpp (compiles)
    PYTHONPATH=DIR python benchmarks/peers.py --work /tmp/peers [--precisions fp32,int8,int4]
        [--llama-cpp f32,q8_0] [--contexts 64,512,1024,1700] [--steps 40] [--rounds 3] [--bundles A,B]

Builds a random-init transformers Llama of the small preset's LLM dimensions
(768 wide, 12 layers, 12 heads, 4 KV heads, SwiGLU 2048, vocabulary 20,736,
tied embeddings), turns it into onnxruntime-genai models with genai's own model
builder (CPU, one per precision) and into llama.cpp GGUF files (one per weight
type, written with gguf-py), and times batch-1 decode with 2 threads: for each
context, the prompt is evaluated, then `steps` tokens one at a time; the median
ms per token (after 3), best of `rounds` interleaved rounds. `--bundles` times
vp bundles' decode steps (as benchmarks/decode_context.py does: the ort
backend's `PagedLLM.forward`) in the same rounds, so a machine whose speed
drifts (a shared one) drifts for all, and prints each vp bundle's ratio to
every peer of its precision (int8: genai int8, llama.cpp q8_0) within a round
(timed seconds apart), as the median and range over the rounds: on a machine
whose speed moves by 10-30% within minutes, the best-of-rounds table can pair
a fast minute of one with a slow minute of the other, the within-round ratio
cannot."""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from functools import partial
from pathlib import Path

import numpy as np

from vp.engines.precision import QUANTIZED


def llama(folder: Path) -> Path:
    import torch
    from transformers import LlamaConfig, LlamaForCausalLM

    if (folder / "config.json").is_file():
        return folder
    torch.manual_seed(0)
    config = LlamaConfig(hidden_size=768, num_hidden_layers=12, num_attention_heads=12, num_key_value_heads=4,
                         intermediate_size=2048, vocab_size=20736, tie_word_embeddings=True,
                         max_position_embeddings=4096, bos_token_id=1, eos_token_id=2)
    LlamaForCausalLM(config).save_pretrained(folder, safe_serialization=True)
    # the builder copies a tokenizer: a word-level one over the vocabulary (decode uses ids only)
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    words = {f"t{i}": i for i in range(config.vocab_size)}
    fast = PreTrainedTokenizerFast(tokenizer_object=Tokenizer(models.WordLevel(words, unk_token="t0")),
                                   bos_token="t1", eos_token="t2", unk_token="t0")
    fast.save_pretrained(folder)
    return folder


def build(hf: Path, work: Path, precision: str) -> Path:
    out = work / f"genai-{precision}"
    if not (out / "genai_config.json").is_file():
        subprocess.run([sys.executable, "-m", "onnxruntime_genai.models.builder", "-i", str(hf), "-o", str(out),
                        "-p", precision, "-e", "cpu", "-c", str(work / "cache")], check=True)
    config_path = out / "genai_config.json"
    config = json.loads(config_path.read_text())
    config["model"]["decoder"]["session_options"]["intra_op_num_threads"] = 2
    config_path.write_text(json.dumps(config, indent=2))
    return out


def gguf(hf: Path, work: Path, qtype: str) -> Path:
    """The HF Llama as a llama.cpp GGUF file with its weight matrices in `qtype` (f32, f16, q8_0),
    written with gguf-py: llama.cpp's own converter wants a SentencePiece or known BPE
    tokenizer, and decode needs ids only (a byte-fallback vocabulary of placeholder tokens)."""
    import gguf as g
    from safetensors.numpy import load_file

    out = work / f"llama-{qtype}.gguf"
    if out.is_file():
        return out
    config = json.loads((hf / "config.json").read_text())
    weights = load_file(str(hf / "model.safetensors"))
    heads, kv_heads = config["num_attention_heads"], config["num_key_value_heads"]
    partial_out = out.with_suffix(".part")  # renamed when whole: a killed run leaves no file that looks done
    writer = g.GGUFWriter(str(partial_out), "llama")
    writer.add_context_length(config["max_position_embeddings"])
    writer.add_embedding_length(config["hidden_size"])
    writer.add_block_count(config["num_hidden_layers"])
    writer.add_feed_forward_length(config["intermediate_size"])
    writer.add_head_count(heads)
    writer.add_head_count_kv(kv_heads)
    writer.add_rope_dimension_count(config["hidden_size"] // heads)
    writer.add_rope_freq_base(config.get("rope_theta") or config["rope_parameters"]["rope_theta"])  # transformers 5
    writer.add_layer_norm_rms_eps(config["rms_norm_eps"])
    writer.add_vocab_size(config["vocab_size"])
    qt = {"f32": g.GGMLQuantizationType.F32, "f16": g.GGMLQuantizationType.F16,
          "q8_0": g.GGMLQuantizationType.Q8_0}[qtype]
    writer.add_file_type({"f32": g.LlamaFileType.ALL_F32, "f16": g.LlamaFileType.MOSTLY_F16,
                          "q8_0": g.LlamaFileType.MOSTLY_Q8_0}[qtype])
    special = ["<unk>", "<s>", "</s>"]
    tokens = special + [f"<0x{b:02X}>" for b in range(256)]
    tokens += [f"t{i}" for i in range(len(tokens), config["vocab_size"])]
    writer.add_tokenizer_model("llama")
    writer.add_token_list(tokens)
    writer.add_token_scores([0.0] * len(tokens))
    writer.add_token_types([g.TokenType.UNKNOWN, g.TokenType.CONTROL, g.TokenType.CONTROL]
                           + [g.TokenType.BYTE] * 256 + [g.TokenType.NORMAL] * (len(tokens) - 259))
    writer.add_bos_token_id(1)
    writer.add_eos_token_id(2)

    def rope_rows(w, n):  # HF rotates halves of a head; llama.cpp rotates adjacent pairs
        return w.reshape(n, 2, w.shape[0] // n // 2, w.shape[1]).swapaxes(1, 2).reshape(w.shape)

    def matrix(name, w):
        w = w.astype(np.float32)
        if qt == g.GGMLQuantizationType.F32:
            writer.add_tensor(name, w)
        elif qt == g.GGMLQuantizationType.F16:
            writer.add_tensor(name, w.astype(np.float16))
        else:
            writer.add_tensor(name, g.quants.quantize(w, qt), raw_dtype=qt)

    matrix("token_embd.weight", weights["model.embed_tokens.weight"])  # tied: also the output projection
    writer.add_tensor("output_norm.weight", weights["model.norm.weight"].astype(np.float32))
    for i in range(config["num_hidden_layers"]):
        hf_layer = f"model.layers.{i}."
        for gguf_name, hf_name in (("attn_norm", "input_layernorm"), ("ffn_norm", "post_attention_layernorm")):
            writer.add_tensor(f"blk.{i}.{gguf_name}.weight", weights[hf_layer + hf_name + ".weight"].astype(np.float32))
        matrix(f"blk.{i}.attn_q.weight", rope_rows(weights[hf_layer + "self_attn.q_proj.weight"], heads))
        matrix(f"blk.{i}.attn_k.weight", rope_rows(weights[hf_layer + "self_attn.k_proj.weight"], kv_heads))
        for gguf_name, hf_name in (("attn_v", "self_attn.v_proj"), ("attn_output", "self_attn.o_proj"),
                                   ("ffn_gate", "mlp.gate_proj"), ("ffn_up", "mlp.up_proj"),
                                   ("ffn_down", "mlp.down_proj")):
            matrix(f"blk.{i}.{gguf_name}.weight", weights[hf_layer + hf_name + ".weight"])
    writer.write_header_to_file()
    writer.write_kv_data_to_file()
    writer.write_tensors_to_file()
    writer.close()
    partial_out.rename(out)
    return out


def llama_cpp_decode_ms(model, context: int, steps: int) -> float:
    """ms per decode token of a llama_cpp.Llama: the prompt evaluated, then `steps` single tokens."""
    model.reset()
    model.eval([7] * context)
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        model.eval([7])
        times.append(time.perf_counter() - start)
    return float(np.median(times[3:])) * 1e3


def decode_ms(model, context: int, steps: int) -> float:
    import onnxruntime_genai as og

    params = og.GeneratorParams(model)
    params.set_search_options(max_length=context + steps + 8, do_sample=False)
    generator = og.Generator(model, params)
    generator.append_tokens(np.full((1, context), 7, np.int32))
    times = []
    for _ in range(steps):
        start = time.perf_counter()
        generator.generate_next_token()
        times.append(time.perf_counter() - start)
    return float(np.median(times[3:])) * 1e3


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--work", type=Path, required=True)
    parser.add_argument("--precisions", default="fp32,int8")
    parser.add_argument("--contexts", default="64,512,1024,1700")
    parser.add_argument("--steps", type=int, default=40)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--llama-cpp", default="", help="llama.cpp weight types to time too (f32, f16, q8_0), "
                        "comma-separated: needs llama-cpp-python and gguf on PYTHONPATH")
    parser.add_argument("--bundles", default="", help="vp bundles to time in the same rounds, comma-separated")
    args = parser.parse_args()
    import onnxruntime_genai as og

    args.work.mkdir(parents=True, exist_ok=True)
    hf = llama(args.work / "llama")
    contexts = [int(c) for c in args.contexts.split(",")]
    runs = {f"genai {p}": partial(decode_ms, og.Model(str(build(hf, args.work, p))))
            for p in filter(None, args.precisions.split(","))}
    family = {f"genai {p}": p for p in filter(None, args.precisions.split(","))}
    for qtype in filter(None, args.llama_cpp.split(",")):
        from llama_cpp import Llama

        model = Llama(str(gguf(hf, args.work, qtype)), n_ctx=max(contexts) + args.steps + 8, n_threads=2,
                      n_threads_batch=2, n_batch=512, verbose=False)
        runs[f"llama.cpp {qtype}"] = partial(llama_cpp_decode_ms, model)
        family[f"llama.cpp {qtype}"] = {"f32": "fp32", "f16": "fp16", "q8_0": "int8"}[qtype]
    for path in filter(None, args.bundles.split(",")):
        name = f"vp {Path(path).parent.name}/{Path(path).name}"
        runs[name], precision = vp_decode(path, max(contexts) + args.steps)
        family[name] = "int8" if precision in QUANTIZED else precision
    times = {(name, c): [] for name in runs for c in contexts}  # one median per round
    for _ in range(args.rounds):
        for name, run in runs.items():
            for c in contexts:
                times[name, c].append(run(c, args.steps))
    print(f"onnxruntime-genai {og.__version__}, batch 1, 2 threads, ms per decode token "
          f"(median of {args.steps}, best of {args.rounds} rounds)")
    width = max(12, *(len(name) + 2 for name in runs))
    print("context " + "".join(f"{name:>{width}}" for name in runs))
    for c in contexts:
        print(f"{c:7d} " + "".join(f"{min(times[name, c]):{width}.2f}" for name in runs))
    pairs = [(v, g) for v in runs if v.startswith("vp ") for g in runs
             if not g.startswith("vp ") and family[g] == family[v]]
    if pairs:
        print(f"\nvp / peer at the same precision within each round (timed seconds apart), median [min-max] "
              f"of {args.rounds}")
        width = max(len(f"{v} / {g}") + 2 for v, g in pairs)
        print("context " + "".join(f"{f'{v} / {g}':>{width}}" for v, g in pairs))
        for c in contexts:
            cells = []
            for v, g in pairs:
                ratios = np.array(times[v, c]) / np.array(times[g, c])
                cells.append(f"{np.median(ratios):.2f} [{ratios.min():.2f}-{ratios.max():.2f}]")
            print(f"{c:7d} " + "".join(f"{cell:>{width}}" for cell in cells))


def vp_decode(path: str, max_context: int):
    """(run(context, steps) -> ms per decode step of the vp bundle at `path` (ONNX Runtime, all cores),
    the bundle LLM's precision)."""
    from decode_context import step_ms

    from vp.runtime.backends import open_backend
    from vp.runtime.bundle import Bundle

    bundle = Bundle.open(path)
    backend, _ = open_backend("ort", bundle)
    block = backend.paged_llm(1).layout.block_size
    llm = backend.paged_llm(-(-max_context // block))
    return partial(step_ms, llm, bundle.manifest.preset["llm"]["d_model"]), bundle.manifest.components["llm"].precision


if __name__ == "__main__":
    main()
