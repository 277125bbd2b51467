"""Task metrics on numpy arrays (no torch: the ONNX benchmark worker uses them too)."""

import numpy as np


def accuracy(pred: np.ndarray, gold: np.ndarray) -> float:
    return float((np.asarray(pred) == np.asarray(gold)).mean())


def confusion_matrix(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> np.ndarray:
    """[gold class, predicted class] counts."""
    m = np.zeros((num_classes, num_classes), dtype=np.int64)
    np.add.at(m, (np.asarray(gold), np.asarray(pred)), 1)
    return m


def per_class(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> list[dict[str, float]]:
    """Precision, recall, F1 and support of each class; 0 where undefined (never predicted / absent)."""
    m = confusion_matrix(pred, gold, num_classes)
    out = []
    for c in range(num_classes):
        tp, predicted, support = m[c, c], m[:, c].sum(), m[c, :].sum()
        precision = tp / predicted if predicted else 0.0
        recall = tp / support if support else 0.0
        f1 = 2 * tp / (predicted + support) if predicted + support else 0.0
        out.append({"precision": float(precision), "recall": float(recall), "f1": float(f1), "support": int(support)})
    return out


def macro_f1(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> float:
    """Unweighted mean of per-class F1; a class never predicted nor present scores 0."""
    return float(np.mean([c["f1"] for c in per_class(pred, gold, num_classes)]))


def classification_metrics(pred: np.ndarray, gold: np.ndarray, num_classes: int) -> dict[str, float]:
    return {"accuracy": accuracy(pred, gold), "macro_f1": macro_f1(pred, gold, num_classes)}


def quality_report(pred: np.ndarray, gold: np.ndarray, label_names: list[str]) -> dict:
    """Accuracy, macro-F1, the worst class's recall, per-class scores and the confusion matrix."""
    n = len(label_names)
    classes = per_class(pred, gold, n)
    worst = min(range(n), key=lambda c: classes[c]["recall"])
    return {"accuracy": round(accuracy(pred, gold), 6), "macro_f1": round(float(np.mean([c["f1"] for c in classes])), 6),
            "min_recall": round(classes[worst]["recall"], 6), "min_recall_class": label_names[worst],
            "per_class": {name: {k: round(v, 6) for k, v in c.items()} for name, c in zip(label_names, classes)},
            "confusion": confusion_matrix(pred, gold, n).tolist()}
