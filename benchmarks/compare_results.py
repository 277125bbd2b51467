"""How far two benchmark results of the same pipeline differ, row by row (reproducibility check).

    python benchmarks/compare_results.py benchmarks/results/A.json benchmarks/results/B.json [--limit 0.05]

Prints each row's p50 per setting in both results and the relative change; exits 1 when any p50
moved by more than --limit (default ±5%).
"""

import argparse
import json
import sys
from pathlib import Path


def compare(a: dict, b: dict) -> list[tuple[str, str, float, float, float]]:
    rows_b = {r["name"]: r for r in b["report"]["rows"]}
    out = []
    for row in a["report"]["rows"]:
        other = rows_b.get(row["name"])
        if other is None:
            continue
        for key, stats in row["latency_ms"].items():
            if key.startswith("real_") and key in other["latency_ms"]:
                p1, p2 = stats["p50"], other["latency_ms"][key]["p50"]
                out.append((row["name"], key, p1, p2, p2 / p1 - 1))
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("first", type=Path)
    parser.add_argument("second", type=Path)
    parser.add_argument("--limit", type=float, default=0.05)
    args = parser.parse_args()
    a, b = (json.loads(p.read_text()) for p in (args.first, args.second))
    worst = 0.0
    print(f"{'row':48} {'setting':14} {'p50 A ms':>9} {'p50 B ms':>9} {'change':>8}")
    for name, key, p1, p2, change in compare(a, b):
        worst = max(worst, abs(change))
        print(f"{name:48} {key:14} {p1:9.3f} {p2:9.3f} {change:+8.1%}")
    print(f"largest change {worst:.1%} (limit {args.limit:.0%}); other processes used "
          f"{a['load']['other_processes_cores_mean']:.2f} and {b['load']['other_processes_cores_mean']:.2f} cores")
    return 0 if worst <= args.limit else 1


if __name__ == "__main__":
    sys.exit(main())
