"""Backends: ONNX Runtime (`ort`) and TensorRT (`trt`), chosen by `open_backend`.

auto: TensorRT when the bundle has engines, their TensorRT flavour imports, and
a GPU they were built for is present; otherwise ONNX Runtime. The reason for
the choice is returned (and logged by the pipeline).
"""

from __future__ import annotations

from vp.runtime.backends.base import Backend

BACKENDS = ("auto", "ort", "trt")


def open_backend(name: str, bundle) -> tuple[Backend, str]:
    """(backend, why) for bundle (a vp.runtime.bundle.Bundle)."""
    if name not in BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(BACKENDS)}")
    if name in ("auto", "trt"):
        from vp.runtime.backends.trt import TrtBackend, trt_unavailable

        reason = trt_unavailable(bundle.manifest)
        if reason is None:
            return TrtBackend(bundle.path, bundle.manifest), "TensorRT engines match this GPU"
        if name == "trt":
            raise ValueError(f"--backend trt is not possible: {reason}")
        from vp.runtime.backends.ort import OrtBackend, providers

        return OrtBackend(bundle.path, bundle.manifest), f"ONNX Runtime ({providers()[0]}) because {reason}"
    from vp.runtime.backends.ort import OrtBackend, providers

    return OrtBackend(bundle.path, bundle.manifest), f"ONNX Runtime ({providers()[0]}) as asked"
