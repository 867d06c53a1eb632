"""The memory-bandwidth floor of a decode step, and the bandwidth it is measured against.

A decode step must read the LLM weights once and the K/V of every sequence's
context; at the memory bandwidth of the device the backend computes on (the
host's for ONNX Runtime on a CPU, the GPU's for TensorRT and ONNX Runtime's CUDA
provider), that takes bytes / bandwidth, whatever the code does.

The host probe times a streaming read on every core (what a CPU decode step
does: read weights and K/V, write almost nothing; a copy's read + write figure
understated it), in a child process so that its buffers never count in vp
bench's peak RSS. The GPU probe times a device-to-device copy (read + write) in
device memory it frees before returning.
"""

from __future__ import annotations

import subprocess
import sys


def host_read_bandwidth_gbs(megabytes: int = 512, repeats: int = 5, threads: int | None = None) -> float:
    """Host memory read bandwidth: a streaming read (a sum) of a large float32 array split over
    `threads` threads (default: every core), best of `repeats`, GB/s. A decode step on the CPU
    reads its weights and K/V and writes almost nothing, so this is its floor's bandwidth."""
    code = (
        "import os, time, numpy as np\n"
        "from concurrent.futures import ThreadPoolExecutor\n"
        f"threads = {threads!r} or os.cpu_count()\n"
        f"parts = np.array_split(np.ones({megabytes} * 2**20 // 4, np.float32), threads); best = float('inf')\n"
        "with ThreadPoolExecutor(threads) as pool:\n"
        "    list(pool.map(np.sum, parts))\n"  # numpy sums outside the GIL
        f"    for _ in range({repeats}):\n"
        "        start = time.perf_counter(); list(pool.map(np.sum, parts)); best = min(best, time.perf_counter() - start)\n"
        f"print({megabytes} * 2**20 / best / 1e9)\n"
    )
    try:
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as error:
        raise ValueError(f"the memory bandwidth probe failed: {error}") from None
    return float(done.stdout)


def gpu_bandwidth_gbs(megabytes: int = 512, repeats: int = 10) -> float:
    """Device memory bandwidth (read + write) of a device-to-device copy on GPU 0, best of
    `repeats` timed with CUDA events, GB/s. Needs cuda-python and a GPU."""
    from vp.runtime.backends.cuda import check, load_cudart

    cudart = load_cudart()
    nbytes = megabytes * 2**20
    src = dst = start = end = None
    try:
        src = check(cudart.cudaMalloc(nbytes))  # one at a time: a failure frees what exists
        dst = check(cudart.cudaMalloc(nbytes))
        start = check(cudart.cudaEventCreate())
        end = check(cudart.cudaEventCreate())
        kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
        check(cudart.cudaMemcpy(dst, src, nbytes, kind))  # warm-up
        best = float("inf")
        for _ in range(repeats):
            check(cudart.cudaEventRecord(start, 0))
            check(cudart.cudaMemcpyAsync(dst, src, nbytes, kind, 0))
            check(cudart.cudaEventRecord(end, 0))
            check(cudart.cudaEventSynchronize(end))
            best = min(best, check(cudart.cudaEventElapsedTime(start, end)) / 1e3)
    finally:
        for pointer in (src, dst):
            if pointer:
                cudart.cudaFree(pointer)
        for event in (start, end):
            if event is not None:
                cudart.cudaEventDestroy(event)
    return 2 * nbytes / best / 1e9


def gpu_memory_used_bytes() -> int | None:
    """Device memory in use on GPU 0 (by every process), None without a GPU."""
    from vp.runtime.backends.cuda import load_cudart

    try:
        cudart = load_cudart()
    except ValueError:
        return None
    error, free, total = cudart.cudaMemGetInfo()
    return None if int(error) != 0 else int(total - free)


def llm_weight_bytes(llm: dict, itemsize: int, head_columns: float | None = None) -> int:
    """Bytes of the LLM weights one decode step reads: the layers and the columns of the tied
    embedding table the output projection reads (`head_columns`, the mean width of the heads the
    steps compute; default all of it; the token lookup reads one column per token)."""
    d, kv = llm["d_model"], llm["n_kv_heads"] * (llm["d_model"] // llm["n_heads"])
    per_layer = 2 * d * d + 2 * d * kv + 3 * d * llm["mlp_hidden"] + 2 * d
    columns = llm["vocab_size"] if head_columns is None else head_columns
    return int((columns * d + llm["n_layers"] * per_layer + d) * itemsize)


def kv_bytes(llm: dict, context: float, sequences: int, itemsize: int) -> float:
    """Bytes of K and V a decode step reads for `sequences` sequences of `context` tokens."""
    head_dim = llm["d_model"] // llm["n_heads"]
    return sequences * context * llm["n_layers"] * 2 * llm["n_kv_heads"] * head_dim * itemsize
