"""Latency statistics, paired speed-ups with intervals, length buckets (numpy only)."""

from math import comb

import numpy as np


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
