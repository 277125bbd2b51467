"""report.json (schema below), report.md and the accuracy-vs-latency plot.

report.json, schema "edgekd.report/v1" (new runtimes and models add rows, never new shapes):
  schema, generated, run{name, seed, pipeline}, data{source, sizes, label_names},
  stages[{kind, folder, seconds, metrics}], machine{cpu, cores, flags...}, versions{...},
  bench{config, load, test_examples}, reference{latency, size, accuracy: row names},
  rows[{name, model, role, format, precision, runtime, device, parameters, file_bytes,
        accuracy, macro_f1, latency_ms{setting: {p50, p90, p99, mean, stdev, min, runs}},
        throughput_eps{setting: examples/s}, peak_rss_mb,
        vs_teacher{speedup_p50, size_ratio, accuracy_delta_pt}}]
Latency settings are named real_b1_t1 (test-split lengths, batch 1, 1 thread), fixed128_b1_tall
(128 tokens, all cores) etc.; throughput settings real_b32_t1 and so on.
"""

import json
import logging
from datetime import datetime, timezone
from pathlib import Path

from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest

log = logging.getLogger(__name__)
SCHEMA = "edgekd.report/v1"


def _find(rows: list[dict], **match) -> dict | None:
    return next((r for r in rows if all(r.get(k) == v for k, v in match.items())), None)


def build_report(bench: dict, history: list[dict], pipeline: dict, latency_setting: str) -> dict:
    rows = bench["rows"]
    ref_latency = _find(rows, model="teacher", runtime="pytorch", device="cpu")
    ref_size = _find(rows, model="teacher", format="onnx", precision="fp32") or ref_latency
    for row in rows:
        vs = {}
        if ref_latency and latency_setting in row["latency_ms"] and latency_setting in ref_latency["latency_ms"]:
            vs["speedup_p50"] = round(ref_latency["latency_ms"][latency_setting]["p50"]
                                      / row["latency_ms"][latency_setting]["p50"], 2)
        if ref_size:
            vs["size_ratio"] = round(ref_size["file_bytes"] / row["file_bytes"], 2)
        if ref_latency:
            vs["accuracy_delta_pt"] = round(100 * (row["accuracy"] - ref_latency["accuracy"]), 2)
        row["vs_teacher"] = vs
    data = next((h for h in history if h["kind"] == "data"), {})
    return {
        "schema": SCHEMA,
        "generated": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "run": {"name": pipeline.get("name"), "seed": pipeline.get("seed"), "pipeline": pipeline},
        "data": {"source": data.get("config", {}).get("source"), **{k: data.get("metrics", {}).get(k)
                                                                    for k in ("sizes", "label_names")}},
        "stages": [{"kind": h["kind"], "folder": h.get("folder"), "seconds": h.get("seconds"),
                    "metrics": h.get("metrics", {})} for h in history if h["kind"] not in ("data", "report")],
        "machine": bench["machine"], "versions": bench["versions"],
        "bench": {"config": bench["config"], "load": bench["load"], "test_examples": bench["test_examples"],
                  "latency_setting": latency_setting},
        "reference": {"latency": ref_latency and ref_latency["name"], "size": ref_size and ref_size["name"],
                      "accuracy": ref_latency and ref_latency["name"]},
        "rows": rows,
    }


def _mb(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.1f}"


def _params(n: int | None) -> str:
    return "–" if n is None else f"{n / 1e6:.2f}M"


def _lat(row: dict, key: str, stat: str = "p50") -> str:
    value = row["latency_ms"].get(key, {}).get(stat)
    return "–" if value is None else f"{value:.2f}"


def render_markdown(report: dict) -> str:
    rows, setting = report["rows"], report["bench"]["latency_setting"]
    keys = list(rows[0]["latency_ms"]) if rows else []
    t1 = [k for k in keys if k.endswith("_t1")]
    tall = [k for k in keys if k.endswith("_tall")]
    thr = list(rows[0]["throughput_eps"]) if rows else []
    m, load, v = report["machine"], report["bench"]["load"], report["versions"]
    lines = [f"# edgekd report: {report['run']['name']}", "",
             f"Generated {report['generated']} on {m['cpu']} ({m['logical_cores']} logical cores, "
             f"flags: {', '.join(m['cpu_flags']) or 'none'}). Test split: {report['bench']['test_examples']} examples. "
             f"Speed-ups are p50 latency relative to `{report['reference']['latency']}` on `{setting}`; size ratios "
             f"relative to `{report['reference']['size']}`.", ""]
    lines += _headline(report)
    head = (["model", "runtime", "precision", "params", "size MB", "accuracy", "macro-F1"]
            + [f"p50 ms {k}" for k in t1[:2]] + [f"p90/p99 ms {setting}"] + [f"p50 ms {k}" for k in tall[:2]]
            + [f"{k} ex/s" for k in thr[:1]] + ["peak RSS MB", "speed-up", "size ratio", "Δ acc pt"])
    lines += ["## Models", "", "| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for r in rows:
        vs = r.get("vs_teacher", {})
        cells = ([r["name"], f"{r['runtime']} {r['device']}", r["precision"], _params(r.get("parameters")),
                  _mb(r["file_bytes"]), f"{100 * r['accuracy']:.2f}%", f"{r['macro_f1']:.4f}"]
                 + [_lat(r, k) for k in t1[:2]] + [f"{_lat(r, setting, 'p90')} / {_lat(r, setting, 'p99')}"]
                 + [_lat(r, k) for k in tall[:2]] + [f"{r['throughput_eps'].get(k, 0):.0f}" for k in thr[:1]]
                 + [f"{r['peak_rss_mb']:.0f}", f"{vs.get('speedup_p50', '–')}×", f"{vs.get('size_ratio', '–')}×",
                    f"{vs.get('accuracy_delta_pt', 0):+.2f}"])
        lines.append("| " + " | ".join(cells) + " |")
    lines += ["", "![accuracy vs latency](report.png)", "", "## Pipeline", "", "| stage | seconds | notes |", "|---|---|---|"]
    for s in report["stages"]:
        lines.append(f"| {s['kind']} | {s['seconds'] if s['seconds'] is not None else '–'} | {_stage_note(s)} |")
    lines += ["", "## Conditions", "",
              f"- Threads: {report['bench']['config']['threads']} (0 = all cores); batch-1 runs per setting: at least "
              f"{report['bench']['config']['runs']} and at least {report['bench']['config'].get('min_seconds', 0)} s "
              f"of timed runs, after {report['bench']['config']['warmup']} warm-up runs; "
              "each model measured in a fresh process (peak RSS is that process's maximum).",
              f"- Load average (1 min) during the benchmark: start {load['load1_start']}, mean {load['load1_mean']}, "
              f"max {load['load1_max']}, end {load['load1_end']} on {load['cores']} cores (it lags, and counts the "
              f"pipeline's own work); CPU taken by other processes meanwhile: "
              f"{load.get('other_processes_cores_mean', float('nan')):.2f} cores on average.",
              "- Versions: " + ", ".join(f"{k} {val}" for k, val in v.items()), ""]
    return "\n".join(lines)


def _headline(report: dict) -> list[str]:
    rows = report["rows"]
    teacher = _find(rows, model="teacher", runtime="pytorch", device="cpu")
    students = [r for r in rows if r["role"] == "student" and r["precision"].startswith("int8")]
    if not teacher or not students:
        return []
    best = max(students, key=lambda r: (r["accuracy"], -r["file_bytes"]))
    vs = best["vs_teacher"]
    return [f"**{best['name']}**: accuracy {100 * best['accuracy']:.2f}% vs teacher {100 * teacher['accuracy']:.2f}% "
            f"({vs.get('accuracy_delta_pt', 0):+.2f} pt), {vs.get('speedup_p50', '–')}× faster p50 than the teacher in "
            f"PyTorch, {vs.get('size_ratio', '–')}× smaller than the teacher's fp32 ONNX file.", ""]


def _stage_note(stage: dict) -> str:
    m = stage["metrics"]
    kind = stage["kind"]
    if kind == "teacher":
        return (f"{m.get('device', 'as given')}, {m.get('epochs_run', 0)} epoch(s), validation accuracy "
                f"{100 * m['validation']['accuracy']:.2f}%")
    if kind == "prune":
        return (f"{m['parameters_before'] / 1e6:.2f}M → {m['parameters_after'] / 1e6:.2f}M parameters; layers "
                f"{m['kept_layers']}, heads {m['layout']['heads']}, FFN {m['layout']['ffn']}; validation accuracy "
                f"before distillation {100 * m['validation']['accuracy']:.2f}%")
    if kind == "distill":
        return (f"{m.get('epochs_run')} epoch(s), best {m.get('best_epoch')}, validation accuracy "
                f"{100 * m['validation']['accuracy']:.2f}%")
    if kind == "export":
        return "; ".join(f"{k}: {v['exporter']}, max |Δlogit| {v['parity']['max_abs_diff']:.1e}" for k, v in m.items())
    if kind == "quantize":
        return "; ".join(f"{k}: test {100 * v['test']['accuracy']:.2f}%" for k, v in m.items())
    if kind == "bundle":
        return f"{m.get('source')}, {m.get('bundle_bytes', 0) / 1e6:.1f} MB"
    return ""


def plot(report: dict, path: Path) -> None:
    """Accuracy vs p50 latency (log x), marker area proportional to file size."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import matplotlib.ticker

    setting = report["bench"]["latency_setting"]
    rows = [r for r in report["rows"] if setting in r["latency_ms"]]
    fig, ax = plt.subplots(figsize=(8, 5.5), dpi=120)
    biggest = max(r["file_bytes"] for r in rows)
    # Labels alternate above and below in latency order so neighbouring points stay readable.
    for i, r in enumerate(sorted(rows, key=lambda r: r["latency_ms"][setting]["p50"])):
        colour = "tab:red" if r["role"] == "teacher" else "tab:blue"
        xy = (r["latency_ms"][setting]["p50"], 100 * r["accuracy"])
        ax.scatter(*xy, s=40 + 1200 * r["file_bytes"] / biggest, alpha=0.45, color=colour, edgecolors="black",
                   linewidths=0.6)
        ax.annotate(f"{r['name']}\n{r['file_bytes'] / 1e6:.1f} MB", xy, fontsize=7, xytext=(8, 8 if i % 2 == 0 else -18),
                    textcoords="offset points")
    ax.set_xscale("log")
    lo, hi = ax.get_xlim()
    ax.set_xlim(lo / 1.1, hi * 1.8)  # room for the slowest point's label
    ax.margins(y=0.12)
    ax.xaxis.set_major_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(matplotlib.ticker.FuncFormatter(lambda v, _: f"{v:g}"))
    ax.tick_params(axis="x", which="minor", labelsize=7)
    ax.set_xlabel(f"p50 latency, ms ({setting}, log scale)")
    ax.set_ylabel("test accuracy, %")
    ax.set_title(f"{report['run']['name']}: accuracy vs latency (marker area ∝ file size)")
    ax.grid(True, which="both", alpha=0.3)
    fig.tight_layout()
    tmp = path.with_name(f".{path.name}.tmp.png")
    fig.savefig(tmp)
    plt.close(fig)
    tmp.replace(path)


def write_report(report: dict, folder: Path) -> dict[str, Path]:
    paths = {"report.json": folder / "report.json", "report.md": folder / "report.md", "report.png": folder / "report.png"}
    atomic_write_json(paths["report.json"], report)
    atomic_write_text(paths["report.md"], render_markdown(report))
    plot(report, paths["report.png"])
    return paths


def rebuild_report(run_dir: Path) -> Path:
    """Rebuild the report in ``run_dir`` from its run.json and stage manifests; returns report.md."""
    from edgekd.errors import EdgekdError

    run_dir = Path(run_dir)
    run_file = run_dir / "run.json"
    if not run_file.is_file():
        raise EdgekdError(f"{run_dir} is not a finished run directory (no run.json)")
    run = json.loads(run_file.read_text())
    history = [{**read_manifest(run_dir / run["data"]), "folder": run["data"]}]
    history += [{**read_manifest(run_dir / s["folder"]), "folder": s["folder"]} for s in run["stages"]]
    if "bench.json" not in run["artifacts"]:
        raise EdgekdError(f"{run_dir}: the run has no bench stage, so there is nothing to report")
    bench = json.loads((run_dir / run["artifacts"]["bench.json"]).read_text())
    report_cfg = next((s for s in run["pipeline"]["stages"] if s["kind"] == "report"), {})
    report = build_report(bench, history, run["pipeline"], report_cfg.get("latency_setting", "real_b1_t1"))
    return write_report(report, run_dir)["report.md"]
