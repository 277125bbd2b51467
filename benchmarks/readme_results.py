"""The README's results block, rendered from a committed benchmark result (never typed in).

    python benchmarks/readme_results.py

rewrites the part of README.md between the results markers from the newest result in
benchmarks/results/ (and the one measured before it, for repeatability); run_default.py calls it
after each measurement, and a test checks that README.md holds exactly what they render to.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "benchmarks"))
sys.path.insert(0, str(ROOT))

from edgekd.report.markdown import faster, percent  # noqa: E402  (the report's own wording)
from frontier import is_classifier_result, load_results, summary_line  # noqa: E402

BEGIN, END = "<!-- results:begin (written by benchmarks/readme_results.py) -->", "<!-- results:end -->"


def _interval(h: dict, suffix: str) -> str:
    """' (95% paired bootstrap -2.67 to -0.21; McNemar p=0.025)' where the result has the paired fields."""
    low_high = h.get(f"accuracy_delta{suffix}_interval_pt")
    if not low_high:
        return ""
    return f" (95% paired bootstrap {low_high[0]:+.2f} to {low_high[1]:+.2f}; McNemar p={h[f'mcnemar_p{suffix}']:.2g})"


def _row(rows: list[dict], name: str) -> dict:
    return next(r for r in rows if r["name"] == name)


def _stage_lines(summary: dict) -> list[str]:
    stages = {s["kind"]: s for s in summary["report"]["stages"]}
    secs = summary["stage_seconds"]
    lines: list[str] = []
    if "prune" in stages and "distill" in stages:
        lines.append(f"- The student: {stages['prune']['summary']}; then distilled from the fine-tuned teacher: "
                     f"{stages['distill']['summary']}" + (f"; vocabulary {stages['vocab']['summary']}" if "vocab" in stages
                                                             else "") + ".")
    bench = summary["report"]["bench"]
    if "bench" in secs:  # training times are in the result file; they depend on how busy the machine was then
        lines.append(f"- The benchmark itself took {secs['bench'] / 60:.1f} min: {bench['config']['rounds']} rounds × "
                     f"{len(bench['threads'])} thread settings × {sum(r.get('timed', True) for r in summary['report']['rows'])} "
                     f"timed rows on "
                     f"{bench['inputs']['sample']} texts, then batch-1 and batched accuracy of every row on all "
                     f"{bench['inputs']['rows']:,} test texts.")
    return lines


# Row order of the runtime table; the PyTorch row is the reference the mobile files are converted from.
FORMATS = {"onnx": ".onnx", "ort": "", "pte": "", "tflite": "", "pytorch": " (PyTorch, reference)"}


def _runtime_table(rows: list[dict], setting: str) -> list[str]:
    """The student as each deployable file, side by side (same inputs, same rounds); empty without a mobile file."""
    students = [r for r in rows if r["role"] == "student" and r.get("format") in FORMATS and r.get("timed", True)
                and setting in r["latency_ms"]]
    if not {r["format"] for r in students} & {"ort", "pte", "tflite"}:
        return []
    tall = setting.replace("_t1", "_tall")
    lines = ["", "The same student as every deployable file (one text at a time, the same inputs and rounds):", "",
             "| file | runtime, kernels | precision | MB | load s | p50 ms, 1 thread | p50 ms, all cores | peak RSS MB "
             "| test accuracy | same prediction as PyTorch (test) |", "|---|---|---|---|---|---|---|---|---|---|"]
    for r in sorted(students, key=lambda r: (list(FORMATS).index(r["format"]), r["latency_ms"][setting]["p50"])):
        p50_all = r["latency_ms"].get(tall, {}).get("p50")
        agrees = percent(r["agreement_vs_pytorch"]["agreement"]) if "agreement_vs_pytorch" in r else "–"
        lines.append(f"| {r['name'].rsplit(' ', 2)[0]}{FORMATS[r['format']]} | {r['runtime']}, "
                     f"{r.get('delegate') or '–'} | {r['precision']} | {r['file_bytes'] / 1e6:.1f} | {r['load_s']:.2f} | "
                     f"{r['latency_ms'][setting]['p50']:.2f} | {'–' if p50_all is None else f'{p50_all:.2f}'} | "
                     f"{r['peak_rss_mb']:.0f} | {percent(r['accuracy'])} | {agrees} |")
    return lines


def _repeat_line(summary: dict, previous: dict, previous_path: str) -> str:
    from compare_results import compare

    changes = compare(previous, summary)
    t1 = [abs(c) for _, key, _, _, c in changes if key.endswith("_t1")] or [float("nan")]
    allc = [abs(c) for *_, c in changes] or [float("nan")]
    before, now = previous["headline"]["speedup_vs_onnxruntime"], summary["headline"]["speedup_vs_onnxruntime"]
    # Stages recomputed between the two (other than the measurement itself) made different files: say so.
    folders = [{s["kind"]: s["folder"] for s in r["report"]["stages"]} for r in (previous, summary)]
    redone = [k for k, f in folders[1].items() if k not in ("bench", "report") and folders[0].get(k) != f]
    since = f" (recomputed in between: {', '.join(redone)}, so those rows time different files)" if redone else ""
    return (f"- Repeatability: against the `make bench` before it ([{Path(previous_path).name}]({previous_path})){since}, "
            f"every p50 at 1 thread moved by at most {max(t1):.1%}, and at most {max(allc):.1%} over both thread "
            f"settings ({len(changes)} p50s; `benchmarks/compare_results.py`); the paired speed-up over the teacher "
            f"on ONNX Runtime was {before['median']:.2f}× then {now['median']:.2f}×.")


def render(summary: dict, result_path: str, previous: dict | None = None, previous_path: str | None = None,
           frontier_line: str = "") -> str:
    report, h = summary["report"], summary["headline"]
    rows = report["rows"]
    student, teacher = _row(rows, h["student"]), _row(rows, h["teacher_onnxruntime"])
    setting = h["setting"]
    s, p = h["speedup_vs_onnxruntime"], h.get("speedup_vs_pytorch")
    m, load = summary["machine"], summary["load"]
    lat = lambda r: r["latency_ms"][setting]["p50"]  # noqa: E731
    lines = [
        f"Measured {summary['measured'][:10]} by the default pipeline's bench stage (`make bench`, or `make demo` "
        f"from scratch) on {m['cpu']} ({m['logical_cores']} logical cores, "
        f"{', '.join(m['cpu_flags'])}, no GPU); other processes used {load['other_processes_cores_mean']:.2f} cores "
        f"on average meanwhile{' (flagged as disturbed)' if load['disturbed'] else ''}. Full table: "
        f"[{Path(result_path).with_suffix('.md').name}]({Path(result_path).with_suffix('.md').as_posix()}) "
        "(JSON beside it).", "",
        f"| | teacher, ONNX Runtime fp32 | {h['student'].removesuffix(' onnxruntime cpu')}, ONNX Runtime | ratio |",
        "|---|---|---|---|",
        f"| test accuracy, batch 1 ({report['data']['sizes']['test']:,} texts) | {percent(teacher['accuracy'])} | "
        f"{percent(student['accuracy'])} | {h['accuracy_delta_pt']:+.2f} points{_interval(h, '')} |",
        f"| macro-F1 / worst-class recall | {teacher['macro_f1']:.4f} / {percent(teacher['min_recall'])} | "
        f"{student['macro_f1']:.4f} / {percent(student['min_recall'])} | {h['macro_f1_delta']:+.4f} F1 |",
        f"| p50 latency, `{setting}` | {lat(teacher):.2f} ms | {lat(student):.2f} ms | **{faster(s['median'])}** "
        f"({s['coverage']:.0%} interval {s['low']:.2f}–{s['high']:.2f}, {s['n']} paired rounds) |",
    ]
    if p:
        pt = _row(rows, h["teacher_pytorch"])
        lines.append(f"| the teacher in PyTorch eager instead, p50 | {lat(pt):.2f} ms | {lat(student):.2f} ms | "
                     f"{faster(p['median'])} ({p['low']:.2f}–{p['high']:.2f}) |")
    if h.get("peer"):
        peer, v = _row(rows, h["peer"]), h["speedup_vs_peer"]
        lines.append(f"| the peer path instead (optimum export + ORTOptimizer + ORTQuantizer dynamic int8 of the "
                     f"teacher): p50 / accuracy / file | {lat(peer):.2f} ms / {percent(peer['accuracy'])} / "
                     f"{peer['file_bytes'] / 1e6:.1f} MB | {lat(student):.2f} ms / {percent(student['accuracy'])} / "
                     f"{student['file_bytes'] / 1e6:.1f} MB | **{faster(v['median'])}** ({v['low']:.2f}–{v['high']:.2f})"
                     f", {h['accuracy_delta_vs_peer_pt']:+.2f} points{_interval(h, '_vs_peer')}, "
                     f"{h['size_ratio_vs_peer']:.2f}× smaller |")
    lines += [
        f"| file | {teacher['file_bytes'] / 1e6:.1f} MB | {student['file_bytes'] / 1e6:.1f} MB | "
        f"**{h['size_ratio']:.2f}× smaller** |",
        f"| peak RSS of its process | {teacher['peak_rss_mb']:.0f} MB | {student['peak_rss_mb']:.0f} MB | "
        f"{h['peak_rss_ratio']:.2f}× less |",
        f"| parameters | {teacher['parameters'] / 1e6:.1f}M | {student['parameters'] / 1e6:.1f}M | |",
    ]
    lines += _runtime_table(rows, setting) + [""]
    lines += _stage_lines(summary)
    ablation = report.get("ablation")
    if ablation:
        by_what = {r["what"]: r for r in ablation["rows"]}
        distilled = by_what.get("distilled student")
        for what, r in by_what.items():
            if what in ("teacher", "distilled student") or distilled is None:
                continue
            lines.append(f"- Ablation, PyTorch fp32 on the test split: the {what} reached {percent(r['accuracy'])} "
                         f"(macro-F1 {r['macro_f1']:.4f}) against {percent(distilled['accuracy'])} "
                         f"({distilled['macro_f1']:.4f}) for the distilled student, {r['accuracy_delta_pt']:+.2f} points.")
    if frontier_line:
        lines.append(frontier_line)
    if previous is not None:
        lines.append(_repeat_line(summary, previous, previous_path))
    return "\n".join(lines)


def results_in_order(folder: Path = ROOT / "benchmarks" / "results") -> list[Path]:
    """Result files of the default pipeline (a headline student, no shape_sweep.py variant), oldest first."""
    return [folder / f"{stem}.json" for stem, summary in load_results(folder) if not summary.get("variant")]


def render_newest(readme_root: Path = ROOT) -> str:
    """The block for the newest result, with the one measured just before it on the same pipeline and host."""
    folder = readme_root / "benchmarks" / "results"
    loaded = load_results(folder)  # every result file is read once, here
    results = [(folder / f"{stem}.json", summary) for stem, summary in loaded if not summary.get("variant")]
    newest, summary = results[-1]
    previous = next(((p, s) for p, s in reversed(results[:-1]) if _same_setup(s, summary)), (None, None))
    rel = lambda p: p.resolve().relative_to(readme_root).as_posix()  # noqa: E731
    return render(summary, rel(newest), previous[1], rel(previous[0]) if previous[0] else None, summary_line(loaded))


def _same_setup(a: dict, b: dict) -> bool:
    # The same recipe (every stage's config), library versions and CPU: only then is a p50 change repeatability.
    return a["pipeline"] == b["pipeline"] and a["report"]["versions"] == b["report"]["versions"] and \
        a["machine"]["cpu"] == b["machine"]["cpu"] and \
        a["report"]["run"].get("pipeline", {}).get("stages") == b["report"]["run"].get("pipeline", {}).get("stages")


def replace_block(readme: Path, begin: str, end: str, body: str) -> None:
    """Rewrite what lies between the ``begin`` and ``end`` marker lines of ``readme`` with ``body``."""
    text = readme.read_text()
    if begin not in text or end not in text:
        raise SystemExit(f"{readme}: no results markers ({begin} ... {end})")
    head, rest = text.split(begin, 1)
    _, tail = rest.split(end, 1)
    readme.write_text(f"{head}{begin}\n{body}\n{end}{tail}")


def update_readme(readme: Path = ROOT / "README.md") -> None:
    replace_block(readme, BEGIN, END, render_newest())


if __name__ == "__main__":
    update_readme()
