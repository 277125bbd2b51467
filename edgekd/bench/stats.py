"""Latency statistics (numpy only)."""

import numpy as np


def latency_stats(seconds: list[float]) -> dict[str, float]:
    """Percentiles, mean, spread in milliseconds over the timed runs."""
    ms = np.asarray(seconds) * 1000.0
    return {
        "p50": round(float(np.percentile(ms, 50)), 4), "p90": round(float(np.percentile(ms, 90)), 4),
        "p99": round(float(np.percentile(ms, 99)), 4), "mean": round(float(ms.mean()), 4),
        "stdev": round(float(ms.std(ddof=1)) if len(ms) > 1 else 0.0, 4), "min": round(float(ms.min()), 4),
        "runs": int(len(ms)),
    }
