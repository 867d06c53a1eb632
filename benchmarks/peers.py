"""Side by side: onnxruntime-genai decoding an LLM of the small preset's shape, on this machine.

    pip install --target DIR onnxruntime-genai==0.18.0 transformers --no-deps   # never into vp's env
    PYTHONPATH=DIR python benchmarks/peers.py --work /tmp/peers [--precisions fp32,int8,int4]
        [--contexts 64,512,1024,1700] [--steps 40] [--rounds 3] [--bundles A,B]

Builds a random-init transformers Llama of the small preset's LLM dimensions
(768 wide, 12 layers, 12 heads, 4 KV heads, SwiGLU 2048, vocabulary 20,736,
tied embeddings), turns it into onnxruntime-genai models with genai's own model
builder (CPU, one per precision), and times batch-1 greedy decode with 2
threads: for each context, the prompt is appended, then `steps` tokens are
generated one at a time; the median ms per token (after 3), best of `rounds`
interleaved rounds. `--bundles` times vp bundles' decode steps (as
benchmarks/decode_context.py does: the ort backend's `PagedLLM.forward`) in the
same rounds, so a machine whose speed drifts (a shared one) drifts for both,
and prints each vp bundle's ratio to the genai model of its precision within a
round (timed seconds apart), as the median and range over the rounds: on a
machine whose speed moves by 10-30% within minutes, the best-of-rounds table
can pair a fast minute of one with a slow minute of the other, the
within-round ratio cannot.
"""

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
    parser.add_argument("--bundles", default="", help="vp bundles to time in the same rounds, comma-separated")
    args = parser.parse_args()
    import onnxruntime_genai as og

    args.work.mkdir(parents=True, exist_ok=True)
    hf = llama(args.work / "llama")
    contexts = [int(c) for c in args.contexts.split(",")]
    runs = {f"genai {p}": partial(decode_ms, og.Model(str(build(hf, args.work, p))))
            for p in args.precisions.split(",")}
    family = {f"genai {p}": p for p in args.precisions.split(",")}
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
             if g.startswith("genai ") and family[g] == family[v]]
    if pairs:
        print(f"\nvp / genai at the same precision within each round (timed seconds apart), median [min-max] "
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
