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
            raise ValueError("the GPU backends need cuda-python: pip install 'vp[rtx]' or 'vp[trt]' (TensorRT), "
                             "or pip install cuda-python beside onnxruntime-gpu") from None
    return cudart


def check(result):
    """cuda-python returns (error, *values); raise on an error, return the values."""
    error, *values = result if isinstance(result, tuple) else (result,)
    if int(error) != 0:
        raise RuntimeError(f"CUDA error {error}")
    return values[0] if len(values) == 1 else values


def gpu_compute_capability() -> int | None:
    """The first GPU's compute capability as an int (89 for SM 8.9), or None without a usable GPU."""
    return probe_gpu()[0]


def probe_gpu() -> tuple[int | None, str]:
    """(the first GPU's compute capability, or None, and why none): cuda-python's error says whether
    there is no GPU, no driver, or a driver older than the CUDA of the cuda-python installed (a
    cuda-python 13 needs a CUDA 13 driver: cudaErrorInsufficientDriver, 35, on an older one)."""
    try:
        cudart = load_cudart()
    except ValueError as error:
        return None, str(error)
    driver = check(cudart.cudaDriverGetVersion())  # 0: no NVIDIA driver is installed
    if not driver:
        return None, "no NVIDIA driver (cuda-python found no GPU)"
    error, count = cudart.cudaGetDeviceCount()
    if int(error) != 0:
        runtime = check(cudart.cudaRuntimeGetVersion())
        hint = (f": the driver's {_cuda(driver)} is older than cuda-python's {_cuda(runtime)}; install the "
                f"cuda-python of the driver's CUDA major (pip install 'cuda-python<{runtime // 1000}')"
                if driver < runtime else "")
        return None, f"cuda-python cannot use the GPU ({getattr(error, 'name', int(error))}){hint}"
    if count == 0:
        return None, "cuda-python found no NVIDIA GPU"
    props = check(cudart.cudaGetDeviceProperties(0))
    return props.major * 10 + props.minor, f"GPU 0 is SM{props.major}{props.minor}"


def _cuda(version: int) -> str:
    """cudart's version number (12040) as "CUDA 12.4"."""
    return f"CUDA {version // 1000}.{version % 1000 // 10}"


def copy_2d(cudart, dst: int, src: int, copies: list[Copy2D], stream) -> None:
    """Enqueue device-to-device strided copies (vp.runtime.kv_pool) between the buffers at dst and src."""
    kind = cudart.cudaMemcpyKind.cudaMemcpyDeviceToDevice
    for c in copies:
        check(cudart.cudaMemcpy2DAsync(dst + c.dst_offset, c.dst_pitch, src + c.src_offset, c.src_pitch,
                                       c.width, c.height, kind, stream))
