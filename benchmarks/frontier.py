"""The frontier: every student the committed benchmark results measured, against the goal.

    python benchmarks/frontier.py          # rewrites benchmarks/results/frontier.md

One row per ONNX Runtime student (and peer) row of each result in benchmarks/results/ that has a
headline: the paired speed-up over its own run's teacher on ONNX Runtime fp32 (same inputs, same
threads), the test-accuracy difference (with its paired bootstrap interval and McNemar p where the
result has them), the file-size ratio against the teacher's fp32 ONNX file, and
how the student was made (the prune, distill and vocab stage notes of that run). Each result compares
only within its own run: teachers of different runs were trained separately. A test checks the
committed frontier.md is exactly what this renders.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.report.markdown import faster, percent  # noqa: E402  (the report's own wording)

RESULTS = ROOT / "benchmarks" / "results"
GOAL = {"speedup": 6.0, "accuracy_delta_pt": -1.0, "size_ratio": 10.0}  # the default task's target


def _how(report: dict, precision: str = "fp32") -> str:
    """The student's shape and training in a few words, from the stage metrics of its run; ``precision`` names
    its quantized model (e.g. int8-dynamic), whose quantize metrics say how the embeddings were stored."""
    metrics = {s["kind"]: s.get("metrics", {}) for s in report.get("stages", [])}
    parts = []
    prune = metrics.get("prune", {})
    if prune:
        layout = prune.get("layout", {})
        parts.append(f"{len(prune.get('kept_layers', []))} layers {prune.get('kept_layers')}"
                     f"{' by ' + prune['layer_selection']['method'] if prune.get('layer_selection') else ''}, "
                     f"{max(layout.get('heads', [0]))} heads, FFN {max(layout.get('ffn', [0]))}, "
                     f"width {prune.get('hidden_after')}")
    distill = metrics.get("distill", {})
    if distill:
        extra = (distill.get("extra_data") or {}).get("total")
        parts.append(f"distilled {distill.get('epochs_run')} epochs" + (f" + {extra:,} teacher-labelled texts" if extra
                                                                        else ""))
    vocab = metrics.get("vocab", {})
    if vocab:
        parts.append(f"vocabulary {vocab['tokens_before']:,} → {vocab['tokens_after']:,}")
    if (metrics.get("quantize", {}).get(f"student.{precision}") or {}).get("embedding_bits") == 4:
        parts.append("4-bit word embeddings")
    return "; ".join(parts)


def frontier_rows(summary: dict, name: str) -> list[dict]:
    """Student and peer rows on ONNX Runtime of one result, measured against its own teacher."""
    report, h = summary["report"], summary["headline"]
    setting = h["setting"]
    teacher = next(r for r in report["rows"] if r["name"] == h["teacher_onnxruntime"])
    out = []
    for row in report["rows"]:
        if row["role"] not in ("student", "peer") or row["runtime"] not in ("onnxruntime", "bundle"):
            continue
        speed = row.get("speedup_vs", {}).get(teacher["name"], {}).get(setting)
        if not speed:
            continue
        out.append({
            "result": name, "row": row["name"], "role": row["role"], "precision": row["precision"],
            "speedup": speed["median"], "low": speed["low"], "high": speed["high"],
            "accuracy": row["accuracy"], "accuracy_delta_pt": round(100 * (row["accuracy"] - teacher["accuracy"]), 2),
            # The paired bootstrap interval and McNemar p on the same texts; absent in results measured before them.
            "accuracy_vs": row.get("accuracy_vs", {}).get(teacher["name"]),
            "size_ratio": round(teacher["file_bytes"] / row["file_bytes"], 2), "p50_ms": row["latency_ms"][setting]["p50"],
            "how": "the teacher through optimum's int8 path" if row["role"] == "peer" else _how(report, row["precision"]),
        })
    return out


def _interval(pair: dict | None) -> str:
    """' [-2.72, -0.21], p=0.026': the paired bootstrap interval of the difference and McNemar's p."""
    if not pair:
        return ""
    low, high = pair["interval_pt"]
    return f" [{low:+.2f}, {high:+.2f}], p={pair['mcnemar_p']:.2g}"


def meets(row: dict) -> bool:
    return (row["speedup"] >= GOAL["speedup"] and row["accuracy_delta_pt"] >= GOAL["accuracy_delta_pt"]
            and row["size_ratio"] >= GOAL["size_ratio"])


def is_classifier_result(result: dict) -> bool:
    """A classification pipeline's result with a headline (causal-LM results have their own report)."""
    return bool((result.get("headline") or {}).get("student")) and result.get("report", {}).get("task") != "causal-lm"


def render(folder: Path = RESULTS) -> str:
    results = sorted(p for p in folder.glob("*.json") if is_classifier_result(json.loads(p.read_text())))
    lines = [
        "# The frontier: students measured by the default pipeline's bench stage",
        "",
        f"Written by `benchmarks/frontier.py` from the result files in this folder. Goal: ≥ {GOAL['speedup']:.0f}× "
        f"faster than the teacher on ONNX Runtime fp32 at 1 thread, batch 1; test accuracy ≥ the teacher's "
        f"{GOAL['accuracy_delta_pt']:+.1f} point; file ≥ {GOAL['size_ratio']:.0f}× smaller than the teacher's fp32 "
        "ONNX file. Each row is against the teacher of its own run (paired rounds, same inputs, same threads); "
        "1 point of test accuracy is 19 of the 1,913 test texts, and retraining the same student moves it by "
        "about half a point (see the distill-seeds results).",
        "",
        "| result | model | speed-up vs teacher ORT fp32 [interval] | p50 ms | test accuracy (Δ vs teacher) | "
        "smaller than teacher | meets all three | how it was made |",
        "|---|---|---|---|---|---|---|---|",
    ]
    paired = None
    for path in results:
        for r in frontier_rows(json.loads(path.read_text()), path.stem):
            paired = paired or r["accuracy_vs"]
            lines.append(
                f"| [{path.stem}]({path.with_suffix('.md').name}) | {r['row']} | {faster(r['speedup'])} "
                f"[{r['low']:.2f}–{r['high']:.2f}] | {r['p50_ms']:.2f} | {percent(r['accuracy'])} "
                f"({r['accuracy_delta_pt']:+.2f}{_interval(r['accuracy_vs'])}) | {r['size_ratio']:.2f}× | "
                f"{'yes' if meets(r) else 'no'} | {r['how']} |")
    if paired:  # results measured before the paired comparison existed show the difference alone
        lines += ["", f"Accuracy [low, high]: {paired['confidence']:.0%} paired bootstrap interval of the difference "
                  "in points over the same test texts; p: McNemar's exact test on the texts only one of the two "
                  "models gets right."]
    return "\n".join(lines) + "\n"


def main() -> None:
    out = RESULTS / "frontier.md"
    out.write_text(render(), encoding="utf-8")
    print(out)


if __name__ == "__main__":
    main()
