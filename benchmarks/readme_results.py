"""The README's results block, rendered from a committed benchmark result (never typed in).

    python benchmarks/readme_results.py benchmarks/results/<stamp>-<pipeline>.json

rewrites the part of README.md between the results markers; run_default.py calls it after each
measurement, and a test checks that README.md holds exactly what the newest result renders to.
"""

import json
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BEGIN, END = "<!-- results:begin (written by benchmarks/readme_results.py) -->", "<!-- results:end -->"


def _row(rows: list[dict], name: str) -> dict:
    return next(r for r in rows if r["name"] == name)


def _pct(x: float) -> str:
    return f"{100 * x:.2f}%"


def render(summary: dict, result_path: str) -> str:
    report, h = summary["report"], summary["headline"]
    rows = report["rows"]
    student, teacher = _row(rows, h["student"]), _row(rows, h["teacher_onnxruntime"])
    setting = h["setting"]
    s, p = h["speedup_vs_onnxruntime"], h.get("speedup_vs_pytorch")
    m, load = summary["machine"], summary["load"]
    lat = lambda r: r["latency_ms"][setting]["p50"]  # noqa: E731
    lines = [
        f"Measured {summary['measured'][:10]} by `make bench` on {m['cpu']} ({m['logical_cores']} logical cores, "
        f"{', '.join(m['cpu_flags'])}, no GPU); other processes used {load['other_processes_cores_mean']:.2f} cores "
        f"on average meanwhile{' (flagged as disturbed)' if load['disturbed'] else ''}. Full table: "
        f"[{Path(result_path).with_suffix('.md').name}]({Path(result_path).with_suffix('.md').as_posix()}) "
        "(JSON beside it).", "",
        f"| | teacher, ONNX Runtime fp32 | {h['student'].removesuffix(' onnxruntime cpu')}, ONNX Runtime | ratio |",
        "|---|---|---|---|",
        f"| test accuracy, batch 1 ({report['data']['sizes']['test']:,} texts) | {_pct(teacher['accuracy'])} | "
        f"{_pct(student['accuracy'])} | {h['accuracy_delta_pt']:+.2f} points |",
        f"| macro-F1 / worst-class recall | {teacher['macro_f1']:.4f} / {_pct(teacher['min_recall'])} | "
        f"{student['macro_f1']:.4f} / {_pct(student['min_recall'])} | {h['macro_f1_delta']:+.4f} F1 |",
        f"| p50 latency, `{setting}` | {lat(teacher):.2f} ms | {lat(student):.2f} ms | **{s['median']:.2f}× faster** "
        f"({s['coverage']:.0%} interval {s['low']:.2f}–{s['high']:.2f}, {s['n']} paired rounds) |",
    ]
    if p:
        pt = _row(rows, h["teacher_pytorch"])
        lines.append(f"| the teacher in PyTorch eager instead, p50 | {lat(pt):.2f} ms | {lat(student):.2f} ms | "
                     f"{p['median']:.2f}× faster ({p['low']:.2f}–{p['high']:.2f}) |")
    lines += [
        f"| file | {teacher['file_bytes'] / 1e6:.1f} MB | {student['file_bytes'] / 1e6:.1f} MB | "
        f"**{h['size_ratio']:.2f}× smaller** |",
        f"| peak RSS of its process | {teacher['peak_rss_mb']:.0f} MB | {student['peak_rss_mb']:.0f} MB | "
        f"{h['peak_rss_ratio']:.2f}× less |",
        f"| parameters | {teacher['parameters'] / 1e6:.1f}M | {student['parameters'] / 1e6:.1f}M | |",
    ]
    return "\n".join(lines)


def update_readme(result_path: Path, readme: Path = ROOT / "README.md") -> None:
    summary = json.loads(Path(result_path).read_text())
    rel = Path(result_path).resolve().relative_to(ROOT).as_posix()
    text = readme.read_text()
    if BEGIN not in text or END not in text:
        raise SystemExit(f"{readme}: no results markers ({BEGIN} ... {END})")
    head, rest = text.split(BEGIN, 1)
    _, tail = rest.split(END, 1)
    readme.write_text(f"{head}{BEGIN}\n{render(summary, rel)}\n{END}{tail}")


if __name__ == "__main__":
    update_readme(Path(sys.argv[1]))
