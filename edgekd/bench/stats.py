"""Latency statistics, paired speed-ups with intervals, length buckets, paired accuracy differences (numpy only)."""

from math import comb

import numpy as np

from edgekd.errors import ConfigError, DataError


def latency_stats(seconds) -> dict[str, float]:
    """Percentiles, mean and spread in milliseconds over timed calls."""
    ms = np.asarray(seconds, dtype=np.float64) * 1000.0
    if ms.size == 0:
        return {"runs": 0}
    return {
        "p50": round(float(np.percentile(ms, 50)), 4), "p90": round(float(np.percentile(ms, 90)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4), "mean": round(float(ms.mean()), 4),
        "stdev": round(float(ms.std(ddof=1)) if ms.size > 1 else 0.0, 4), "min": round(float(ms.min()), 4),
        "runs": int(ms.size),
    }


def median_interval(values, level: float = 0.95) -> dict[str, float]:
    """Median of ``values`` and a distribution-free interval for it from order statistics.

    For n values, (x_(k), x_(n+1-k)) covers the true median with probability 1 - 2 P(Bin(n, 1/2) < k);
    the largest k reaching ``level`` is used. With fewer than 6 values no k reaches 95%, so the
    interval is (min, max) and its actual coverage (e.g. 93.8% for 5 rounds) is reported with it.
    """
    x = np.sort(np.asarray(values, dtype=np.float64))
    n = x.size
    if n == 0:
        return {}

    def coverage(k: int) -> float:
        return 1.0 - 2.0 * sum(comb(n, i) for i in range(k)) / 2.0**n

    k = 1
    while k + 1 <= n // 2 and coverage(k + 1) >= level:
        k += 1
    return {"median": round(float(np.median(x)), 4), "low": round(float(x[k - 1]), 4),
            "high": round(float(x[n - k]), 4), "coverage": round(coverage(k), 4), "n": int(n)}


def paired_speedup(reference_rounds, model_rounds, level: float = 0.95) -> dict[str, float]:
    """Speed-up of a model over a reference from per-round p50s taken side by side.

    Round r timed both on the same inputs within seconds of each other, so ref_r / model_r cancels
    drift that hits both; the median of those ratios is reported with its interval.
    """
    ratios = np.asarray(reference_rounds, dtype=np.float64) / np.asarray(model_rounds, dtype=np.float64)
    return {**median_interval(ratios, level), "rounds": [round(float(r), 4) for r in ratios]}


def cv(values) -> float:
    """Coefficient of variation (stdev / mean) of per-round values; 0 for a single round."""
    v = np.asarray(values, dtype=np.float64)
    return round(float(v.std(ddof=1) / v.mean()), 4) if v.size > 1 and v.mean() > 0 else 0.0


def bucket_names(edges: list[int]) -> list[str]:
    """[16, 32, 64] -> ['<=16', '17-32', '33-64', '>64']."""
    names, low = [], 1
    for edge in edges:
        names.append(f"<={edge}" if low == 1 else f"{low}-{edge}")
        low = edge + 1
    return names + [f">{edges[-1]}"]


def by_length(seconds_per_input: np.ndarray, lengths: np.ndarray, edges: list[int]) -> dict[str, dict]:
    """Latency stats per input-length bucket; ``seconds_per_input`` is [rounds, inputs]."""
    which = np.searchsorted(np.asarray(edges), lengths, side="left")  # length <= edge[i] -> bucket i
    out = {}
    for i, name in enumerate(bucket_names(edges)):
        cols = np.flatnonzero(which == i)
        if cols.size:
            out[name] = {**latency_stats(seconds_per_input[:, cols].ravel()), "inputs": int(cols.size)}
    return out


def mcnemar_exact_p(a_only: int, b_only: int) -> float:
    """McNemar's exact two-sided p-value: under "a and b are equally accurate" each of the m = a_only + b_only
    discordant examples is a fair coin, so p = min(1, 2 * P(Bin(m, 1/2) <= min(a_only, b_only))).

    The tail is summed in exact integers (C(m, i+1) = C(m, i) (m - i) / (i + 1)) and divided once by 2^m:
    no overflow or cancellation at test-split sizes (m in the thousands).
    """
    m, k = a_only + b_only, min(a_only, b_only)
    if m == 0:
        return 1.0
    term, tail = 1, 0
    for i in range(k + 1):
        tail += term
        term = term * (m - i) // (i + 1)
    return min(1.0, 2 * tail / (1 << m))  # int / int: Python divides big integers correctly rounded


def paired_accuracy_difference(correct_a, correct_b, confidence: float = 0.95, resamples: int = 10000,
                               seed: int = 0) -> dict:
    """Accuracy of a minus accuracy of b, in points, scored on the same examples, with its sampling noise.

    ``correct_a`` and ``correct_b`` are per-example correctness ([n], bool or 0/1), in the same example order.
    Returns {delta_pt, interval_pt [low, high] (paired bootstrap percentile interval), confidence, resamples,
    discordant {a_right_b_wrong, a_wrong_b_right}, mcnemar_p, n}. Only the discordant examples move the
    difference; the interval says how much it would move on another test set of the same size.
    """
    a, b = np.asarray(correct_a), np.asarray(correct_b)
    if a.ndim != 1 or a.shape != b.shape or a.size == 0:
        raise DataError(f"paired accuracy: per-example correctness must be two equally long, non-empty 1-D vectors "
                        f"over the same examples; got shapes {a.shape} and {b.shape}")
    if not (np.isin(a, (0, 1)).all() and np.isin(b, (0, 1)).all()):
        raise DataError("paired accuracy: per-example correctness must be bool or 0/1")
    if not 0.0 < confidence < 1.0 or resamples < 1:
        raise ConfigError(f"paired accuracy: confidence must be in (0, 1) and resamples >= 1; got {confidence}, "
                          f"{resamples}")
    a, b = a.astype(bool), b.astype(bool)
    n = a.size
    a_only, b_only = int((a & ~b).sum()), int((~a & b).sum())
    # A bootstrap resample draws n example indices with replacement; the difference it yields depends only on
    # how many drawn examples are a-only (+1) and b-only (-1), which is Multinomial(n, [a_only, b_only, rest] / n).
    # Drawing those counts directly is the same distribution as resampling indices, without a [resamples, n] array.
    p = np.array([a_only, b_only, n - a_only - b_only], dtype=np.float64) / n
    counts = np.random.default_rng(seed).multinomial(n, p, size=resamples)  # [resamples, 3]
    deltas = 100.0 * (counts[:, 0] - counts[:, 1]) / n  # [resamples] points
    tail = 100.0 * (1.0 - confidence) / 2
    low, high = np.percentile(deltas, [tail, 100.0 - tail])
    return {"delta_pt": round(100.0 * (a_only - b_only) / n, 2),
            "interval_pt": [round(float(low), 2), round(float(high), 2)],
            "confidence": confidence, "resamples": resamples,
            "discordant": {"a_right_b_wrong": a_only, "a_wrong_b_right": b_only},
            "mcnemar_p": float(f"{mcnemar_exact_p(a_only, b_only):.4g}"), "n": int(n)}
