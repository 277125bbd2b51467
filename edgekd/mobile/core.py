"""The parity gate of a converted phone-runtime file: does it still make the PyTorch model's predictions?

Plain numpy on logits [N, classes] of the same N validation texts in the same order; the stage computes them.
"""

import numpy as np


def parity_gate(mobile: np.ndarray, source: np.ndarray, pytorch: np.ndarray, min_agreement: float,
                against: str = "pytorch") -> dict:
    """Argmax agreement of ``mobile`` with the PyTorch model and with its ``source`` ONNX model, and the largest
    |logit difference| against each; the gate holds ``against`` ("pytorch" or "source") to ``min_agreement``.
    ``gate`` is "passed" or "failed: <why>"."""
    if not (mobile.shape == source.shape == pytorch.shape):
        return {"gate": f"failed: logits of shape {mobile.shape} vs {source.shape} (.onnx) and {pytorch.shape} "
                        "(PyTorch)", "min_agreement": min_agreement}
    n = len(mobile)
    if n == 0:
        return {"gate": "failed: no validation texts to compare on", "min_agreement": min_agreement, "examples": 0}
    pred = mobile.argmax(-1)
    agreement = {"pytorch": float((pred == pytorch.argmax(-1)).mean()), "source": float((pred == source.argmax(-1)).mean())}
    agree = agreement[against]
    report = {"examples": n, "min_agreement": min_agreement, "gate_against": against,
              "agreement_vs_pytorch": round(agreement["pytorch"], 6), "agreement_vs_onnx": round(agreement["source"], 6),
              "max_abs_diff_vs_onnx": float(np.abs(mobile - source).max()),
              "max_abs_diff_vs_pytorch": float(np.abs(mobile - pytorch).max())}
    if not np.isfinite(mobile).all():
        report["gate"] = "failed: non-finite logits"
    elif agree < min_agreement:
        flips = int(round((1 - agree) * n))
        what = "PyTorch" if against == "pytorch" else "its source ONNX model"
        report["gate"] = (f"failed: argmax agreement with {what} {agree:.4f} < {min_agreement} ({flips} of {n} "
                          "validation texts differ)")
    else:
        report["gate"] = "passed"
    return report
