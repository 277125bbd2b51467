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
import re
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
        best = distill.get("best_epoch")  # early stopping keeps the best epoch's weights, not the last one's
        parts.append(f"distilled {distill.get('epochs_run')} epochs"
                     + (f" (best {best})" if best and best != distill.get("epochs_run") else "")
                     + (f" + {extra:,} teacher-labelled texts" if extra else ""))
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


def _stage_folder(report: dict, kind: str) -> str | None:
    return next((s.get("folder") for s in report.get("stages", []) if s["kind"] == kind), None)


def _named_row(report: dict, name: str) -> dict | None:
    return next((r for r in report["rows"] if r["name"] == name), None)


def _delta(row: dict | None, teacher_accuracy: float) -> float | None:
    return None if row is None else round(100 * (row["accuracy"] - teacher_accuracy), 2)


def gap_rows(results: list[tuple[str, dict]]) -> list[dict]:
    """Where the int8 student's accuracy gap comes from, one row per training of the default pipeline (its teacher
    and distill folders), from that training's newest result: the teacher's own int8 path (the peer), the fp32
    student (pruning + distillation + vocabulary trimming) and the int8 student, each against the same teacher on
    the same texts. A recipe is the whole description of how the int8 student was made, vocabulary and embedding
    bits included."""
    newest: dict[tuple, tuple[str, dict]] = {}
    for name, summary in results:  # oldest first: a later result of the same training replaces the earlier one
        if summary.get("variant"):
            continue
        report = summary["report"]
        newest[(_stage_folder(report, "teacher"), _stage_folder(report, "distill"))] = (name, summary)
    return [gap_row(name, summary) for name, summary in sorted(newest.values(), key=lambda item: item[0])]


def gap_row(name: str, summary: dict) -> dict:
    """One result's headline student split into the parts of its gap to the teacher (see gap_rows)."""
    h, report = summary["headline"], summary["report"]
    precision = _named_row(report, h["student"])["precision"]  # e.g. int8-dynamic; its fp32 source drops the suffix
    fp32 = _delta(_named_row(report, h["student"].replace(f".{precision}", "")), h["teacher_accuracy"])
    int8, peer = h["accuracy_delta_pt"], h.get("peer_accuracy")
    return {"result": name, "teacher_accuracy": h["teacher_accuracy"], "int8": int8, "fp32": fp32,
            "fp32_validation": validation_delta(report),
            "peer": None if peer is None else round(100 * (peer - h["teacher_accuracy"]), 2),
            "quantizing": None if fp32 is None else round(int8 - fp32, 2), "how": _how(report, precision)}


def _recipe(row: dict) -> str:
    """How the student was made, less the epoch early stopping happened to keep: what a training repeats."""
    return re.sub(r" \(best \d+\)", "", row["how"])


def same_recipe(rows: list[dict]) -> list[dict]:
    """The trainings made the way the newest one was: the rows the recipe's means are over."""
    return [r for r in rows if _recipe(r) == _recipe(rows[-1])]


def _mean(values: list[float | None]) -> float | None:
    values = [v for v in values if v is not None]
    return sum(values) / len(values) if values else None


def _mean_n(values: list[float | None]) -> str:
    """'-1.10 (n=4)': the mean of the values present and how many there were."""
    present = [v for v in values if v is not None]
    return f"{_mean(present):+.2f} (n={len(present)})" if present else "–"


def _signed(x: float | None) -> str:
    return "–" if x is None else f"{x:+.2f}"


def gap_table(results: list[tuple[str, dict]]) -> list[str]:
    rows = gap_rows(results)
    sizes = _sizes(results)
    if not rows:
        return []
    same = same_recipe(rows)
    lines = ["## Where the gap comes from: every training of the default pipeline", "",
             f"Test accuracy in points against each training's own teacher (the same {sizes.get('test', 0):,} "
             "texts). The peer is the teacher "
             "quantized by optimum's int8 path (ONNX Runtime dynamic int8): what int8 alone costs this model. "
             "\"fp32 student\" is what pruning, distillation and vocabulary trimming cost; \"quantizing\" is the int8 "
             "student minus the fp32 student. Beside them, the fp32 student's difference on the validation split as the "
             "distill stage measured it: the PyTorch student before vocabulary trimming, at its best epoch (early "
             "stopping picks the maximum, so it leans high).",
             "",
             "| result | teacher | peer (teacher int8) | fp32 student, validation | fp32 student | int8 student | quantizing "
             "| how the student was made |",
             "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['result']} | {percent(r['teacher_accuracy'])} | {_signed(r['peer'])} | "
                     f"{_signed(r['fp32_validation'])} | {_signed(r['fp32'])} | {_signed(r['int8'])} | "
                     f"{_signed(r['quantizing'])} | {r['how']} |")
    means = " | ".join(_mean_n([r[k] for r in same]) for k in ("peer", "fp32_validation", "fp32", "int8", "quantizing"))
    lines.append(f"| mean of the {len(same)} trainings of the newest recipe | – | {means} | {_recipe(rows[-1])} |")
    return lines + [""]


def validation_delta(report: dict) -> float | None:
    """The distilled fp32 student's validation accuracy minus its teacher's, in points (the stage metrics)."""
    metrics = {s["kind"]: (s.get("metrics") or {}).get("validation") or {} for s in report.get("stages", [])}
    student, teacher = metrics.get("distill", {}).get("accuracy"), metrics.get("teacher", {}).get("accuracy")
    return None if student is None or teacher is None else round(100 * (student - teacher), 2)


def sweep_variants(results: list[tuple[str, dict]]) -> list[tuple[str, dict]]:
    """The newest result of each shape_sweep.py variant distilled from the newest variant's teacher (a variant
    measured again replaces its older result; variants of an older teacher are left to the full table)."""
    variants = [(n, s) for n, s in results if s.get("variant")]
    if not variants:
        return []
    teacher = _stage_folder(variants[-1][1]["report"], "teacher")
    newest = {s["variant"]["name"]: (n, s) for n, s in variants if _stage_folder(s["report"], "teacher") == teacher}
    return sorted(newest.values(), key=lambda item: item[0])


def shape_table(results: list[tuple[str, dict]], seeds: str = "") -> list[str]:
    """The shape sweep (benchmarks/shape_sweep.py): students of other shapes distilled from one teacher, beside the
    newest default-pipeline result from that same teacher; ``seeds`` is seed_spread's sentence."""
    variants = sweep_variants(results)
    if not variants:
        return []
    teacher = _stage_folder(variants[0][1]["report"], "teacher")
    defaults = [(n, s) for n, s in results if not s.get("variant") and _stage_folder(s["report"], "teacher") == teacher]
    sizes = _sizes(variants)
    lines = ["## Other shapes from the same teacher", "",
             "Written with benchmarks/shape_sweep.py: the default pipeline with one prune or distill setting changed "
             "(no ablation stage), trained from the default run's own teacher and benched against it in its own run. "
             f"One training each: {seeds} Validation "
             f"({sizes.get('validation', 0):,} texts) is what training selects on; test ({sizes.get('test', 0):,} "
             "texts) only reports. Speed-ups from different bench runs can differ by more than their intervals "
             "(compare a variant that changes only training with the default: same architecture), so only large speed "
             "differences count.", "",
             "| result | change | int8 speed-up vs teacher ORT fp32 [interval] | int8 p50 ms | fp32 student Δ validation | "
             "fp32 student Δ test | int8 student Δ test [interval] | smaller than teacher | meets all three | "
             "how it was made |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    ranked = []  # (label, fp32 student Δ on validation, on test)
    for name, summary in defaults[-1:] + variants:
        row = next(r for r in frontier_rows(summary, name) if r["row"] == summary["headline"]["student"])
        gap = gap_row(name, summary)
        change = " ".join(summary["variant"]["overrides"]) if summary.get("variant") else "none (the default pipeline)"
        ranked.append((summary["variant"]["name"] if summary.get("variant") else "default", gap["fp32_validation"],
                       gap["fp32"]))
        lines.append(f"| [{name}]({name}.md) | {change} | {faster(row['speedup'])} [{row['low']:.2f}–{row['high']:.2f}] | "
                     f"{row['p50_ms']:.2f} | {_signed(gap['fp32_validation'])} | {_signed(gap['fp32'])} | "
                     f"{row['accuracy_delta_pt']:+.2f}"
                     f"{_interval(row['accuracy_vs'])} | {row['size_ratio']:.2f}× | {'yes' if meets(row) else 'no'} | "
                     f"{row['how']} |")
    if all(v is not None and t is not None for _, v, t in ranked):
        order = lambda i: ", ".join(r[0] for r in sorted(ranked, key=lambda r: -r[i]))  # noqa: E731
        lines += ["", f"The fp32 students ranked by validation, what selection may use: {order(1)}. "
                  f"Ranked by test, which only reports: {order(2)}. One training each, so only differences larger "
                  "than the paired intervals above are resolved."]
    return lines + [""]


def load_results(folder: Path = RESULTS) -> list[tuple[str, dict]]:
    """Every classifier result in the folder, oldest first, as (file stem, summary)."""
    loaded = [(p.stem, json.loads(p.read_text())) for p in sorted(folder.glob("*.json"))]
    return [(stem, summary) for stem, summary in loaded if is_classifier_result(summary)]


def _sizes(results: list[tuple[str, dict]]) -> dict:
    """The split sizes of the newest of these results: {train, validation, test}."""
    return (results[-1][1]["report"].get("data") or {}).get("sizes") or {} if results else {}


def seed_spread(folder: Path = RESULTS) -> str:
    """How far retraining the same student with another seed moved its test accuracy, from the newest classifier
    distill-seeds result (benchmarks/distill_seeds.py); one sentence, or a pointer when there is none."""
    seeds = sorted(folder.glob("*-distill-seeds.json"))
    seeds = [p for p in seeds if not p.name.endswith("-lm-distill-seeds.json")]
    if not seeds:
        return "a single training's accuracy also moves with its seed (benchmarks/distill_seeds.py measures by how much)."
    runs = json.loads(seeds[-1].read_text())["arms"]["distilled"]["runs"]
    spread = 100 * (max(r["test_accuracy"] for r in runs) - min(r["test_accuracy"] for r in runs))
    return (f"retraining the same student with {len(runs)} seeds moved its test accuracy by up to {spread:.2f} "
            f"points ({seeds[-1].stem}).")


def summary_line(loaded: list[tuple[str, dict]]) -> str:
    """One README bullet: how the goal stands over every training of the current recipe, and the other shapes."""
    rows = gap_rows(loaded)
    if not rows:
        return ""
    same = same_recipe(rows)
    mean = lambda key: _signed(_mean([r[key] for r in same]))  # noqa: E731  (n is said once, in the sentence)
    line = (f"- The goal (≥ {GOAL['speedup']:.0f}× faster than the teacher on ONNX Runtime fp32, within "
            f"{-GOAL['accuracy_delta_pt']:.0f} point, ≥ {GOAL['size_ratio']:.0f}× smaller) across results: "
            "[benchmarks/results/frontier.md](benchmarks/results/frontier.md). Over the "
            f"{len(same)} trainings of this recipe the int8 student's test accuracy differs from its teacher's by "
            f"{mean('int8')} points on average (the fp32 student {mean('fp32')}, and {mean('fp32_validation')} on "
            f"validation; the teacher's own int8, the peer, {mean('peer')}).")
    variants = sweep_variants(loaded)
    shapes = []
    for name, summary in variants:
        row = next(r for r in frontier_rows(summary, name) if r["row"] == summary["headline"]["student"])
        shapes.append(f"{summary['variant']['name']} {row['speedup']:.2f}×, {row['accuracy_delta_pt']:+.2f} points, "
                      f"{row['size_ratio']:.2f}× smaller")
    if shapes:
        line += " Other shapes from one teacher (int8, one training each): " + "; ".join(shapes) + "."
    return line


def render(folder: Path = RESULTS) -> str:
    loaded = load_results(folder)
    test_texts, seeds = _sizes(loaded).get("test", 0), seed_spread(folder)
    lines = [
        "# The frontier: students measured by the default pipeline's bench stage",
        "",
        f"Written by `benchmarks/frontier.py` from the result files in this folder. Goal: ≥ {GOAL['speedup']:.0f}× "
        f"faster than the teacher on ONNX Runtime fp32 at 1 thread, batch 1; test accuracy ≥ the teacher's "
        f"{GOAL['accuracy_delta_pt']:+.1f} point; file ≥ {GOAL['size_ratio']:.0f}× smaller than the teacher's fp32 "
        "ONNX file. Each row is against the teacher of its own run (paired rounds, same inputs, same threads); "
        f"1 point of test accuracy is {test_texts / 100:.0f} of the {test_texts:,} test texts, and "
        f"{seeds}",
        "",
        *gap_table(loaded),
        *shape_table(loaded, seeds),
        "## Every student row of every result",
        "",
        "| result | model | speed-up vs teacher ORT fp32 [interval] | p50 ms | test accuracy (Δ vs teacher) | "
        "smaller than teacher | meets all three | how it was made |",
        "|---|---|---|---|---|---|---|---|",
    ]
    paired = None
    for stem, summary in loaded:
        for r in frontier_rows(summary, stem):
            paired = paired or r["accuracy_vs"]
            lines.append(
                f"| [{stem}]({stem}.md) | {r['row']} | {faster(r['speedup'])} "
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
