"""vp.calibration: INT8 for the LLM, as the field does it today (docs/export.md).

    data         calibration and held-out sequences from real task layouts of the pipeline
    statistics   activation statistics over them: max, percentile, mse
    smoothquant  activation outliers moved into the weights before quantizing (exact in float)
    graph        the exported ONNX graph -> int8 weights (DequantizeLinear) and, for W8A8, Q/DQ on
                 the activations
    gate         the accuracy gate: teacher-forced top-1 agreement and KL against fp32
    record       what the bundle stores of all this (manifest `calibration`)
    llm          the whole flow for vp-export
"""
