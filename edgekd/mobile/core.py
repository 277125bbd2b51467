"""The parity gate of a converted phone-runtime file: does it still make the PyTorch model's predictions?

Plain numpy on logits [N, classes] of the same N validation texts in the same order; the stage computes them.
"""

import numpy as np


def parity_gate(mobile: np.ndarray, source: np.ndarray, pytorch: np.ndarray, min_agreement: float) -> dict:
    """Argmax agreement of ``mobile`` with ``pytorch`` (the gate) and with its ``source`` ONNX model, and the largest
    |logit difference| against each; ``gate`` is "passed" or "failed: <why>"."""
    if not (mobile.shape == source.shape == pytorch.shape):
        return {"gate": f"failed: logits of shape {mobile.shape} vs {source.shape} (.onnx) and {pytorch.shape} "
                        "(PyTorch)", "min_agreement": min_agreement}
    n = len(mobile)
    if n == 0:
        return {"gate": "failed: no validation texts to compare on", "min_agreement": min_agreement, "examples": 0}
    pred = mobile.argmax(-1)
    agree = float((pred == pytorch.argmax(-1)).mean())
    report = {"examples": n, "min_agreement": min_agreement, "agreement_vs_pytorch": round(agree, 6),
              "agreement_vs_onnx": round(float((pred == source.argmax(-1)).mean()), 6),
              "max_abs_diff_vs_onnx": float(np.abs(mobile - source).max()),
              "max_abs_diff_vs_pytorch": float(np.abs(mobile - pytorch).max())}
    if not np.isfinite(mobile).all():
        report["gate"] = "failed: non-finite logits"
    elif agree < min_agreement:
        flips = int(round((1 - agree) * n))
        report["gate"] = (f"failed: argmax agreement with PyTorch {agree:.4f} < {min_agreement} ({flips} of {n} "
                          "validation texts differ)")
    else:
        report["gate"] = "passed"
    return report
