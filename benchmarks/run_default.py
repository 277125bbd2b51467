"""Run (or reuse) the default pipeline and write its benchmark to benchmarks/results/.

    python benchmarks/run_default.py [--pipeline FILE] [--fresh] [KEY=VALUE ...]

A causal-LM pipeline (pipelines/smollm2-bbc.yaml) rewrites the README's language-model block
(benchmarks/readme_lm_results.py); a classifier pipeline rewrites the main results block and frontier.md.

The result files are named after the day the benchmark was *measured* (the bench stage's manifest),
not the day this script ran: reusing a finished bench never passes old numbers off as new. With
--fresh the bench (and the report after it) is measured again; `make bench` passes it.
Every number in the files comes from report.json; nothing is typed in.
"""

import argparse
import json
import logging
import re
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest  # noqa: E402
from edgekd.config import load_pipeline  # noqa: E402
from edgekd.pipeline import run_pipeline  # noqa: E402


def write_result(result, pipeline_name: str, out: Path, variant: dict | None = None) -> tuple[Path, dict]:
    """<out>/<measured>-<pipeline>[--<variant>].json and .md from a finished run; returns the stem and the summary.
    ``variant`` ({name, overrides}) tags a run of the pipeline with some settings changed (shape_sweep.py)."""
    bench_record = next(r for r in result.stages if r.kind == "bench")
    measured = read_manifest(bench_record.folder)["finished"]
    if bench_record.status == "skipped":
        logging.warning("the bench was reused from %s; its numbers keep that date (use --fresh to measure again)",
                        measured)
    report = json.loads((result.run_dir / "report.json").read_text())
    stamp = measured.replace(":", "").replace("+0000", "Z")[:17]  # 2026-11-26T001500
    stem = out / (f"{stamp}-{pipeline_name}" + (f"--{variant['name']}" if variant else ""))
    summary = {"pipeline": pipeline_name, **({"variant": variant} if variant else {}), "measured": measured,
               "machine": report["machine"], "load": report["bench"]["load"],
               "stage_seconds": {s["kind"]: s["seconds"] for s in report["stages"]},
               "headline": report["headline"], "report": report}
    atomic_write_json(stem.with_suffix(".json"), summary)
    md = strip_plots((result.run_dir / "report.md").read_text())
    if variant:
        md = (f"Variant `{variant['name']}` of the default pipeline: {' '.join(variant['overrides'])} "
              f"(benchmarks/shape_sweep.py).\n\n{md}")
    atomic_write_text(stem.with_suffix(".md"), md)
    return stem, summary


def strip_plots(markdown: str) -> str:
    """The report's Markdown without its plot images: the PNGs stay in the run directory, not in the results."""
    return re.sub(r"!\[[^\]]*\]\([^)]*\.png\)\n", "", markdown)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--pipeline", default=str(ROOT / "pipelines" / "minilm-rotten-tomatoes.yaml"))
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--fresh", action="store_true", help="measure the bench again even if it finished before")
    parser.add_argument("--no-readme", action="store_true", help="leave README.md's results section as it is")
    parser.add_argument("overrides", nargs="*")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    config = load_pipeline(args.pipeline, args.overrides)
    result = run_pipeline(config, force=frozenset({"bench"}) if args.fresh else frozenset())
    stem, summary = write_result(result, config.name, Path(args.out))
    print(f"wrote {stem}.json and {stem}.md (measured {summary['measured']})")
    if summary["report"].get("task") == "causal-lm":  # its own README block; frontier.md tabulates classifier students
        from readme_lm_results import update_readme
    else:
        from frontier import RESULTS, render
        from readme_results import update_readme

        atomic_write_text(RESULTS / "frontier.md", render())
        print("benchmarks/results/frontier.md rewritten with it")
    if not args.no_readme:
        update_readme()
        print("README.md results section rewritten from it")
    return 0


if __name__ == "__main__":
    sys.exit(main())
