"""CUDA memory through cuda-python, shared by the TensorRT and the ONNX Runtime (CUDA) backends."""

from __future__ import annotations

import numpy as np


def load_cudart():
    try:
        from cuda.bindings import runtime as cudart
    except ImportError:
        try:
            from cuda import cudart  # cuda-python 12.x
        except ImportError:
            raise ValueError("the TensorRT backend needs cuda-python: pip install 'vp[rtx]' or 'vp[trt]'") from None
    return cudart


def check(result):
    """cuda-python returns (error, *values); raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


def gpu_compute_capability() -> int | None:
    """The first GPU's compute capability as an int (89 for SM 8.9), or None without a usable GPU."""
    try:
        cudart = load_cudart()
    except ValueError:
        return None
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0 or count == 0:
        return None
    props = check(cudart.cudaGetDeviceProperties(0))
    return props.major * 10 + props.minor


def commit_slots(cudart, pool: int, new_kv: int, slots: np.ndarray, slot_bytes: int, stream) -> None:
    """Device rows new_kv[i] -> pool slot slots[i]: one device-to-device copy per run of
    consecutive slots (a prefill chunk is a few runs, a decode step one copy per sequence)."""
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    breaks = np.flatnonzero(np.diff(slots) != 1) + 1
    for run in np.split(np.arange(len(slots)), breaks):
        src = new_kv + int(run[0]) * slot_bytes
        dst = pool + int(slots[run[0]]) * slot_bytes
        check(cudart.cudaMemcpyAsync(dst, src, len(run) * slot_bytes, kind, stream))
