"""CUDA memory through cuda-python, shared by the TensorRT and the ONNX Runtime (CUDA) backends."""

from __future__ import annotations

from vp.runtime.kv_pool import Copy2D


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


def copy_2d(cudart, dst: int, src: int, copies: list[Copy2D], stream) -> None:
    """Enqueue device-to-device strided copies (vp.runtime.kv_pool) between the buffers at dst and src."""
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    for c in copies:
        check(cudart.cudaMemcpy2DAsync(dst + c.dst_offset, c.dst_pitch, src + c.src_offset, c.src_pitch,
                                       c.width, c.height, kind, stream))
