"""Phone runtimes, each file gated on parity: ONNX Runtime Mobile (.ort) from the ONNX students, ExecuTorch (.pte)
and LiteRT (.tflite) from the PyTorch student."""
