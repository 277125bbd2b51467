"""Accuracy guard for int8: keep the most quantization-sensitive nodes in float until the validation drop fits.

Sensitivity of a node = how much the mean KL(fp32 || int8) over a validation subset falls when everything
except that node is quantized (leave-one-out against the fully quantized model). KL of the logits is used
rather than accuracy: it is smooth (a subset of a few hundred texts flips few predictions) and needs no labels.
Nodes are then excluded greedily, most sensitive first, each step checked on the full validation split.
"""

import logging
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.metrics import accuracy
from edgekd.ort import make_session, ort_logits
from edgekd.quantize.config import QuantGuard
from edgekd.quantize.core import Quantizer

log = logging.getLogger(__name__)


@dataclass
class GuardReport:
    fp32_accuracy: float
    int8_accuracy: float  # after exclusions
    drop_points_before: float  # 100 * (fp32 - int8) accuracy, nothing excluded
    drop_points_after: float
    within_budget: bool
    excluded: list[str] = field(default_factory=list)
    # one row per scanned node, most sensitive first: {"node", "kl", "kl_reduction"}
    sensitivity: list[dict] = field(default_factory=list)
    scan_examples: int = 0
    seconds: float = 0.0


def mean_kl(reference_logits: np.ndarray, logits: np.ndarray) -> float:
    """Mean over rows of KL(softmax(reference) || softmax(logits)); both [N, classes]."""
    def log_softmax(x):
        x = x.astype(np.float64) - x.max(-1, keepdims=True)
        return x - np.log(np.exp(x).sum(-1, keepdims=True))

    ref, other = log_softmax(reference_logits), log_softmax(logits)
    return float((np.exp(ref) * (ref - other)).sum(-1).mean())


def _logits(path: Path, token_ids: list[list[int]], pad_id: int) -> np.ndarray:
    return ort_logits(make_session(path), token_ids, pad_id)


def _drop_points(fp32_acc: float, logits: np.ndarray, labels: np.ndarray) -> float:
    return round(100.0 * (fp32_acc - accuracy(logits.argmax(-1), labels)), 6)


def sensitivity_scan(quantize: Quantizer, candidates: list[str], reference: np.ndarray, token_ids: list[list[int]],
                     pad_id: int, scratch: Path) -> list[dict]:
    """Leave-one-out KL of every candidate node vs the fp32 ``reference`` logits [N, classes] of ``token_ids``."""
    full = scratch / "all.onnx"
    quantize(full, [])
    base = mean_kl(reference, _logits(full, token_ids, pad_id))
    rows = []
    for i, node in enumerate(candidates):
        path = scratch / f"without-{i}.onnx"
        quantize(path, [node])
        kl = mean_kl(reference, _logits(path, token_ids, pad_id))
        rows.append({"node": node, "kl": round(kl, 8), "kl_reduction": round(base - kl, 8)})
        path.unlink()
    return sorted(rows, key=lambda r: -r["kl_reduction"])


def guarded_quantize(quantize: Quantizer, candidates: list[str], fp32: Path, dst: Path,
                     val_ids: list[list[int]], val_labels, pad_id: int, guard: QuantGuard) -> GuardReport:
    """Quantize into ``dst``; if the validation accuracy drop exceeds the budget, keep nodes in float.

    ``candidates``: node names of the graph ``quantize`` works on (see quantizable_nodes). Warns when the
    budget still does not hold with ``guard.max_excluded`` nodes excluded.
    """
    start = time.perf_counter()
    labels = np.asarray(val_labels)
    fp32_logits = _logits(fp32, val_ids, pad_id)
    fp32_acc = accuracy(fp32_logits.argmax(-1), labels)
    quantize(dst, [])
    drop = before = _drop_points(fp32_acc, _logits(dst, val_ids, pad_id), labels)
    report = GuardReport(fp32_acc, round(fp32_acc - before / 100, 6), before, before, before <= guard.max_drop_points)
    if report.within_budget:
        log.info("int8 validation drop %.2f points is within the %.2f budget: nothing kept in float",
                 before, guard.max_drop_points)
        report.seconds = time.perf_counter() - start
        return report
    # The scan subset: the first examples of the (already shuffled) validation split.
    subset = val_ids[: guard.examples]
    with tempfile.TemporaryDirectory(prefix="edgekd-guard-") as tmp:
        report.sensitivity = sensitivity_scan(quantize, candidates, fp32_logits[: len(subset)], subset, pad_id,
                                              Path(tmp))
    report.scan_examples = len(subset)
    helpful = [r["node"] for r in report.sensitivity if r["kl_reduction"] > 0]
    for node in helpful[: guard.max_excluded]:
        report.excluded.append(node)
        quantize(dst, report.excluded)
        drop = _drop_points(fp32_acc, _logits(dst, val_ids, pad_id), labels)
        log.info("kept %s in float: validation drop %.2f points", node, drop)
        if drop <= guard.max_drop_points:
            break
    report.drop_points_after, report.int8_accuracy = drop, round(fp32_acc - drop / 100, 6)
    report.within_budget = drop <= guard.max_drop_points
    if not report.within_budget:
        log.warning("int8 validation accuracy drop %.2f points still exceeds quantize.guard.max_drop_points %.2f "
                    "with %d node(s) kept in float (max_excluded %d, %d node(s) helped in the scan); the model is "
                    "kept as it is: raise max_excluded or the budget, or use another calibration method",
                    drop, guard.max_drop_points, len(report.excluded), guard.max_excluded, len(helpful))
    report.seconds = time.perf_counter() - start
    return report
