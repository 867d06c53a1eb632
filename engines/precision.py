"""A bundle's precision, and the float type of each graph it holds.

    fp32, fp16   every graph at that float type (TensorRT is strongly typed: the graph is the precision)
    int8         the LLM in W8A8: per-channel symmetric int8 weights, per-tensor symmetric int8
                 activations (calibrated, after SmoothQuant) as Q/DQ around every weight MatMul;
                 for full TensorRT (explicit quantization)
    int8-wo      the LLM with int8 weights only (DequantizeLinear on the weights, float
                 activations); for TensorRT for RTX and for ONNX Runtime on a CPU

A quantized bundle holds two graphs per component (docs/export.md): `onnx`, at
fp16, which TensorRT builds, and `cpu_onnx`, at fp32, which ONNX Runtime's CPU
provider loads (its CPU kernels are fp32; it fuses DequantizeLinear + MatMul
into integer MatMulNBits, and Q/DQ + MatMul into MatMulIntegerToFloat). The
int8 weights are the same bytes in both.
"""

from __future__ import annotations

PRECISIONS = ("fp32", "fp16", "int8", "int8-wo")
QUANTIZED = ("int8", "int8-wo")


def check_precision(precision: str) -> None:
    if precision not in PRECISIONS:
        raise ValueError(f"unknown precision {precision!r}; expected one of {', '.join(PRECISIONS)}")


def graph_float(precision: str, cpu: bool = False) -> str:
    """"fp32" or "fp16": the float type of a bundle graph of `precision` (cpu: its cpu_onnx graph)."""
    check_precision(precision)
    if cpu or precision == "fp32":
        return "fp32"
    return "fp16"
