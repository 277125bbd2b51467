"""report.json: the benchmark rows plus what the pipeline did, and the headline comparison.

report.json, schema "edgekd.report/v2":
  schema, generated, run{name, seed, pipeline}, data{source, sizes, label_names},
  stages[{kind, folder, seconds, metrics, summary}], machine{...}, versions{...},
  bench{config, threads, inputs, load{..., disturbed}, latency_setting, references},
  headline{student, teacher_onnxruntime, teacher_pytorch, setting, speedup_vs_onnxruntime{median, low, high,
           coverage}, speedup_vs_pytorch{...}, accuracy_delta_pt, macro_f1_delta, min_recall, size_ratio,
           accuracy_delta_interval_pt[low, high], discordant{a_right_b_wrong, a_wrong_b_right}, mcnemar_p,
           peak_rss_ratio, peer, speedup_vs_peer{...}, peer_accuracy, accuracy_delta_vs_peer_pt, size_ratio_vs_peer,
           accuracy_delta_vs_peer_interval_pt, discordant_vs_peer, mcnemar_p_vs_peer
           (the peer fields only when the run has a peer row; the paired fields only with accuracy_vs rows)},
  rows[{name, model, role, format, precision, runtime, device, parameters, file_bytes, load_s, first_inference_ms,
        accuracy, macro_f1, min_recall, min_recall_class, per_class{label: {precision, recall, f1, support}},
        confusion[[gold][pred]], batched{batch_size, accuracy, macro_f1},
        latency_ms{setting: {p50, p90, p99, mean, stdev, min, runs}}, rounds_p50_ms{setting: [...]}, cv{setting},
        by_length{setting: {bucket: {p50, p90, ..., inputs}}}, throughput_eps{setting}, peak_rss_mb,
        speedup_vs{reference row: {setting: {median, low, high, coverage, n, rounds}}},
        accuracy_vs{reference row: {delta_pt, interval_pt, confidence, discordant, mcnemar_p, n}}, tokenize_ms (bundle)}]
        (rows with timed false are scored only: empty timing fields, no first_inference_ms or speedup_vs),
  ablation{split, reference, budget, rows[...]} only when the run has ablation rows (see ablation_section)
Settings: real_b1_t1 (the test inputs, batch 1, 1 thread), real_b1_tall (all physical cores),
fixed128_b1_t1 (one 128-token input); throughput real_b32_t1 and so on. Accuracy is batch 1 (as
the bundle runs), with the batched figure beside it.
"""

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest
from edgekd.errors import EdgekdError
from edgekd.report.markdown import render_markdown
from edgekd.report.plot import plot
from edgekd.report.plot_runtimes import LATENCY_PNG, SIZE_PNG, plot_latency, plot_size
from edgekd.stages import STAGES

log = logging.getLogger(__name__)
SCHEMA = "edgekd.report/v2"


def find_row(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def _shipped_student(rows: list[dict], history: list[dict]) -> dict | None:
    """The int8 student the headline is about: the one the bundle ships, else the best on validation.

    Never chosen by test accuracy: the test split only reports.
    """
    students = [r for r in rows if r["role"] == "student" and r["runtime"] == "onnxruntime"
                and r.get("format", "onnx") == "onnx" and str(r["precision"]).startswith("int8")]
    bundle = next((h for h in history if h["kind"] == "bundle"), None)
    if bundle is not None:
        shipped = find_row(students, name=f"{bundle['config']['model'].removesuffix('.onnx')} onnxruntime cpu")
        if shipped is not None:
            return shipped
    quantize = next((h for h in history if h["kind"] == "quantize"), {"metrics": {}})
    val = {f"{k} onnxruntime cpu": v["validation"]["accuracy"] for k, v in quantize["metrics"].items()}
    return max(students, key=lambda r: val.get(r["name"], 0.0), default=None)


def headline(rows: list[dict], history: list[dict], setting: str) -> dict | None:
    student = _shipped_student(rows, history)
    ort_teacher = find_row(rows, role="teacher", runtime="onnxruntime", precision="fp32", format="onnx")
    pt_teacher = find_row(rows, role="teacher", runtime="pytorch", device="cpu")
    if student is None or ort_teacher is None:
        return None
    out = {"student": student["name"], "teacher_onnxruntime": ort_teacher["name"], "setting": setting,
           "speedup_vs_onnxruntime": _speedup(student, ort_teacher, setting),
           "size_ratio": round(ort_teacher["file_bytes"] / student["file_bytes"], 2),
           "peak_rss_ratio": round(ort_teacher["peak_rss_mb"] / student["peak_rss_mb"], 2)}
    if pt_teacher is not None:
        out.update(teacher_pytorch=pt_teacher["name"], speedup_vs_pytorch=_speedup(student, pt_teacher, setting))
    if "accuracy" in student and "accuracy" in ort_teacher:
        out.update(accuracy=student["accuracy"], teacher_accuracy=ort_teacher["accuracy"],
                   accuracy_delta_pt=round(100 * (student["accuracy"] - ort_teacher["accuracy"]), 2),
                   macro_f1_delta=round(student["macro_f1"] - ort_teacher["macro_f1"], 4),
                   min_recall=student["min_recall"], teacher_min_recall=ort_teacher["min_recall"])
        out.update(_paired(student, ort_teacher, ""))
    out.update(_peer_headline(student, find_row(rows, role="peer"), setting))
    out.update(_budget_headline(student, ort_teacher, history))
    return out


def _budget_headline(student: dict, teacher: dict, history: list[dict]) -> dict:
    """A prune latency target's prediction (candidate shapes timed before training) beside what the
    bench measured for the shipped student at the same thread count; nothing without a target."""
    budget = next((h.get("metrics", {}).get("budget") for h in history if h["kind"] == "prune"), None)
    if not budget:
        return {}
    # The bench's thread tags: t1, tall (all physical cores, what a target's threads: 0 means), t<n>.
    setting = "real_b1_tall" if budget["threads"] == 0 else f"real_b1_t{budget['threads']}"
    out = {"latency_budget": {k: budget.get(k) for k in ("target", "budget_ms", "predicted_latency_ms",
                                                          "predicted_speedup", "threads", "sequence_length",
                                                          "clock")}}
    measured = student.get("latency_ms", {}).get(setting)
    if measured:
        out["latency_budget"].update(setting=setting, measured_p50_ms=measured["p50"],
                                     measured_speedup=_speedup(student, teacher, setting)["median"])
    return out


def _peer_headline(student: dict, peer: dict | None, setting: str) -> dict:
    """The shipped student against the peer path (optimum export + ORTOptimizer + ORTQuantizer dynamic
    int8 of the teacher): what edgekd adds over the route a user would take without it."""
    if peer is None:
        return {}
    out = {"peer": peer["name"], "speedup_vs_peer": _speedup(student, peer, setting),
           "size_ratio_vs_peer": round(peer["file_bytes"] / student["file_bytes"], 2)}
    if "accuracy" in student and "accuracy" in peer:
        out.update(peer_accuracy=peer["accuracy"],
                   accuracy_delta_vs_peer_pt=round(100 * (student["accuracy"] - peer["accuracy"]), 2))
        out.update(_paired(student, peer, "_vs_peer"))
    return out


def _paired(student: dict, reference: dict, suffix: str) -> dict:
    """The accuracy difference's paired bootstrap interval, discordant texts and McNemar p (bench rows
    made before the bench kept per-text correctness have none)."""
    pair = student.get("accuracy_vs", {}).get(reference["name"])
    if not pair:
        return {}
    return {f"accuracy_delta{suffix}_interval_pt": pair["interval_pt"], f"discordant{suffix}": pair["discordant"],
            f"mcnemar_p{suffix}": pair["mcnemar_p"]}


def _speedup(row: dict, reference: dict, setting: str) -> dict:
    paired = row.get("speedup_vs", {}).get(reference["name"], {}).get(setting)
    if paired is None:
        raise EdgekdError(f"report: no paired timing of {row['name']} against {reference['name']} on {setting}; "
                          f"settings measured: {', '.join(row['latency_ms'])}")
    return {k: paired[k] for k in ("median", "low", "high", "coverage", "n")}


def _validation_accuracy(history: list[dict], row: dict) -> float | None:
    """The validation accuracy the stage that trained ``row``'s model recorded (teacher, distill, ablation)."""
    for h in reversed(history):
        metrics = h.get("metrics", {})
        if h["kind"] == "ablation" and row.get("variant") in metrics.get("variants", {}):
            return metrics["variants"][row["variant"]]["validation"]["accuracy"]
        if row["model"] in h.get("outputs", {}) and h["kind"] in ("teacher", "distill"):
            return metrics.get("validation", {}).get("accuracy")
    return None


def _variant_description(variant: str | None) -> str:
    if variant == "hard-labels":
        return "hard-label student (no distillation)"
    if variant == "no-extra-data":
        return "distilled, without the teacher-labelled extra text"
    return f"distilled, {str(variant).removeprefix('no-')} = 0"


def ablation_section(rows: list[dict], history: list[dict]) -> dict | None:
    """Does distillation help? The teacher, the distilled student and the ablation students on the test split.

    {split, reference, budget, rows[{name, model, what, variant, validation_accuracy, accuracy, macro_f1,
    recall{label: r}, accuracy_delta_pt, macro_f1_delta}]}: PyTorch fp32 rows on CPU, batch 1; the deltas
    are against the distilled student. None when the run has no ablation rows.
    """
    ablation = [r for r in rows if r["role"] == "ablation"]
    if not ablation:
        return None
    teacher = find_row(rows, role="teacher", runtime="pytorch", device="cpu") or \
        find_row(rows, role="teacher", runtime="onnxruntime", precision="fp32", format="onnx")
    distilled = find_row(rows, model="student", runtime="pytorch", device="cpu")
    stage = next((h for h in reversed(history) if h["kind"] == "ablation"), {})

    def entry(row: dict, what: str) -> dict:
        out = {"name": row["name"], "model": row["model"], "what": what, "variant": row.get("variant"),
               "validation_accuracy": _validation_accuracy(history, row), "accuracy": row.get("accuracy"),
               "macro_f1": row.get("macro_f1"),
               "recall": {label: c["recall"] for label, c in row.get("per_class", {}).items()}}
        if distilled is not None and "accuracy" in row and "accuracy" in distilled:
            out.update(accuracy_delta_pt=round(100 * (row["accuracy"] - distilled["accuracy"]), 2),
                       macro_f1_delta=round(row["macro_f1"] - distilled["macro_f1"], 4))
        return out

    described = [(teacher, "teacher"), (distilled, "distilled student")] + [
        (r, _variant_description(r.get("variant"))) for r in ablation]
    return {"split": "test", "reference": distilled["name"] if distilled else None,
            "budget": stage.get("metrics", {}).get("budget"),
            "rows": [entry(row, what) for row, what in described if row is not None]}


def build_report(bench: dict, history: list[dict], pipeline: dict, latency_setting: str) -> dict:
    if bench.get("task") == "causal-lm":
        from edgekd.report.lm import build_lm_report

        return build_lm_report(bench, history, pipeline, latency_setting)
    rows = bench["rows"]
    if rows and latency_setting not in rows[0]["latency_ms"]:
        raise EdgekdError(f"report latency_setting {latency_setting!r} was not measured; the bench measured "
                          f"{', '.join(rows[0]['latency_ms'])}")
    data = next((h for h in history if h["kind"] == "data"), {})
    return {
        "schema": SCHEMA,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"name": pipeline.get("name"), "seed": pipeline.get("seed"), "pipeline": pipeline},
        "data": {"source": data.get("config", {}).get("source"), **{k: data.get("metrics", {}).get(k)
                                                                    for k in ("sizes", "label_names")}},
        "stages": [{"kind": h["kind"], "folder": h.get("folder"), "seconds": h.get("seconds"),
                    "metrics": h.get("metrics", {}), "summary": STAGES[h["kind"]].config.summary(h.get("metrics", {}))}
                   for h in history if h["kind"] not in ("data", "report")],
        "machine": bench["machine"], "versions": bench["versions"],
        "bench": {"config": bench["config"], "threads": bench["threads"], "inputs": bench["inputs"],
                  "load": bench["load"], "latency_setting": latency_setting, "references": bench["references"]},
        "headline": headline(rows, history, latency_setting),
        **({"ablation": ablation_section(rows, history)} if any(r["role"] == "ablation" for r in rows) else {}),
        "rows": rows,
    }


def write_report(report: dict, folder: Path) -> dict[str, Path]:
    """Write report.json, report.md and report.png into ``folder``; returns the files that exist.

    A classification report also gets report_latency.png and report_size.png where rows qualify (report.md's
    "Runtimes" section references exactly those); a stale one from an earlier report is removed.
    """
    paths = {"report.json": folder / "report.json", "report.md": folder / "report.md", "report.png": folder / "report.png"}
    atomic_write_json(paths["report.json"], report)
    if report.get("task") == "causal-lm":
        from edgekd.report.lm_markdown import plot_lm, render_lm_markdown

        atomic_write_text(paths["report.md"], render_lm_markdown(report))
        plot_lm(report, paths["report.png"])
    else:
        atomic_write_text(paths["report.md"], render_markdown(report))
        plot(report, paths["report.png"])
        for name, draw in ((LATENCY_PNG, plot_latency), (SIZE_PNG, plot_size)):
            if not draw(report, folder / name):
                (folder / name).unlink(missing_ok=True)  # no qualifying rows now: report.md no longer shows it
            paths[name] = folder / name
    return {name: path for name, path in paths.items() if path.exists()}


def _read_json(path: Path, what: str) -> dict:
    if not path.is_file():
        raise EdgekdError(f"{path}: {what} is missing; rerun `edgekd run` on the pipeline to recompute it")
    try:
        return json.loads(path.read_text())
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise EdgekdError(f"{path}: {what} is corrupt ({exc}); delete its stage folder and rerun the pipeline") from None


def rebuild_report(run_dir: Path) -> Path:
    """Rebuild the report in ``run_dir`` from its run.json and stage manifests; returns report.md."""
    run_dir = Path(run_dir)
    if not (run_dir / "run.json").is_file():
        raise EdgekdError(f"{run_dir} is not a finished run directory (no run.json)")
    run = _read_json(run_dir / "run.json", "the run summary")
    if not isinstance(run, dict) or not {"data", "stages", "artifacts", "pipeline"} <= set(run):
        raise EdgekdError(f"{run_dir / 'run.json'}: not an edgekd run summary (needs data, stages, artifacts, "
                          "pipeline); run the pipeline again to rewrite it")
    history = []
    for folder in [run["data"]] + [s["folder"] for s in run["stages"]]:
        manifest = read_manifest(run_dir / folder)
        if manifest is None:
            raise EdgekdError(f"{run_dir / folder}: manifest.json is missing; rerun the pipeline to recompute it")
        history.append({**manifest, "folder": folder})
    if "bench.json" not in run["artifacts"]:
        raise EdgekdError(f"{run_dir}: the run has no bench stage, so there is nothing to report")
    bench = _read_json(run_dir / run["artifacts"]["bench.json"], "the benchmark result")
    if bench.get("schema") not in ("edgekd.bench/v2", "edgekd.bench-lm/v1"):
        raise EdgekdError(f"{run_dir / run['artifacts']['bench.json']}: benchmark schema {bench.get('schema')!r} is "
                          "not edgekd.bench/v2 or edgekd.bench-lm/v1; rerun the pipeline to measure again")
    report_cfg = next((s for s in run["pipeline"]["stages"] if s["kind"] == "report"), {})
    report = build_report(bench, history, run["pipeline"], report_cfg.get("latency_setting", "real_b1_t1"))
    return write_report(report, run_dir)["report.md"]
