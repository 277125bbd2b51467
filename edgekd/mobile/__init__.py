"""Phone runtimes: ONNX Runtime Mobile (.ort) files made from the ONNX students, each gated on parity."""
