"""Run (or reuse) the default pipeline and write a dated result table to benchmarks/results/.

    python benchmarks/run_default.py [--pipeline FILE] [KEY=VALUE ...]

The table holds what the report measured: accuracy, latency percentiles, throughput, peak memory
and file size of every model, and the headline ratios of the int8 student against the teacher
(p50 speed-up over the teacher in PyTorch eager, 1 thread, batch 1, real test lengths; file size
against the teacher's fp32 ONNX file; accuracy difference in points). Nothing here is typed in:
every number comes from report.json.
"""

import argparse
import json
import logging
import sys
from datetime import date
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd.artifacts import atomic_write_json, atomic_write_text  # noqa: E402
from edgekd.config import load_pipeline  # noqa: E402
from edgekd.pipeline import run_pipeline  # noqa: E402


def headline(report: dict) -> dict:
    rows = report["rows"]
    teacher = next(r for r in rows if r["model"] == "teacher" and r["runtime"] == "pytorch" and r["device"] == "cpu")
    int8 = [r for r in rows if r["role"] == "student" and r["precision"].startswith("int8")]
    out = {"teacher_accuracy": teacher["accuracy"], "students": {}}
    for r in int8:
        out["students"][r["name"]] = {"accuracy": r["accuracy"], **r["vs_teacher"],
                                      "p50_ms": r["latency_ms"]["real_b1_t1"]["p50"],
                                      "teacher_p50_ms": teacher["latency_ms"]["real_b1_t1"]["p50"]}
    return out


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "minilm-rotten-tomatoes.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = load_pipeline(args.pipeline, args.overrides)
    result = run_pipeline(config)
    report = json.loads((result.run_dir / "report.json").read_text())
    stem = Path(args.out) / f"{date.today().isoformat()}-{config.name}"
    summary = {"pipeline": config.name, "date": date.today().isoformat(), "machine": report["machine"],
               "load": report["bench"]["load"], "stage_seconds": {s["kind"]: s["seconds"] for s in report["stages"]},
               "headline": headline(report), "report": report}
    atomic_write_json(stem.with_suffix(".json"), summary)
    md = (result.run_dir / "report.md").read_text().replace("![accuracy vs latency](report.png)\n", "")
    atomic_write_text(stem.with_suffix(".md"), md)
    print(f"wrote {stem}.json and {stem}.md")
    return 0


if __name__ == "__main__":
    sys.exit(main())
