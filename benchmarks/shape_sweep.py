"""Other student shapes from the default pipeline's own teacher: the frontier along depth, width and budget.

    python benchmarks/shape_sweep.py [--variants 5-layers 3-layers ...] [--fresh]

Each variant is the default pipeline (pipelines/minilm-rotten-tomatoes.yaml) with a few fields changed
(VARIANTS below), run in its own folder runs/shape-sweep/<variant>. Its data split and teacher are the
default run's finished folders, hard-linked in (their keys do not depend on the student), so every variant
is distilled from the same teacher and benched against it on the same test texts, threads and runtime as
the default student. (The peer is made again from that teacher in seconds: a stage's key names its
parent.) Two things are cut to keep a variant short (its stage times are in its result file): the ablation
stage (a hard-label twin per shape would double it) and the ExecuTorch/LiteRT conversions (the goal is
measured on ONNX Runtime). Run the default pipeline first (make demo): without its run.json the sweep
stops with one line.

Writes benchmarks/results/<measured>-minilm-rotten-tomatoes--<variant>.json and .md, the same schema
as benchmarks/run_default.py plus a "variant" entry ({name, overrides}), and rewrites frontier.md and
the README's frontier line. The README's results block keeps showing the newest default-pipeline result:
variants never replace it.
Selection inside each run uses the validation split only; test numbers are reported, never used.
"""

import argparse
import json
import logging
import os
import shutil
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.artifacts import atomic_write_text  # noqa: E402
from edgekd.config import load_pipeline, validate_pipeline  # noqa: E402
from edgekd.pipeline import run_pipeline  # noqa: E402
from run_default import write_result  # noqa: E402  (the same result files as the default pipeline's)

PIPELINE = ROOT / "pipelines" / "minilm-rotten-tomatoes.yaml"
# name -> overrides of the default pipeline (the default keeps 4 of 6 layers, width 320, 6 heads, FFN 768,
# 3 distillation epochs). Depth moves speed most; width and epochs are the other two knobs.
VARIANTS = {
    "5-layers": ["stages.prune.layer_ratio=0.167"],
    "3-layers": ["stages.prune.layer_ratio=0.5"],
    "6-epochs": ["stages.distill.epochs=6"],
    "width-384": ["stages.prune.hidden_ratio=0.0"],
}
SHARED_KINDS = ("teacher",)  # stages whose key does not depend on the student: linked from the default run
SKIPPED_KINDS = ("ablation",)


def variant_config(name: str):
    """The default pipeline with the variant's overrides, no ablation stage, and .ort as the only mobile target."""
    config = load_pipeline(PIPELINE, VARIANTS[name])
    data = config.model_dump(mode="json", exclude_unset=True)
    data["stages"] = [s for s in data["stages"] if s["kind"] not in SKIPPED_KINDS]
    for stage in data["stages"]:
        if stage["kind"] == "mobile":
            stage["targets"] = ["ort"]
    return validate_pipeline(data, where=f"variant {name}")


def link_shared_stages(default_run: Path, variant_run: Path) -> None:
    """Hard-link the default run's data folder and its teacher stage folder into the variant's run folder.
    Finished stage folders are never written again, so the links cost no space and change nothing."""
    record = json.loads((default_run / "run.json").read_text())
    folders = [record["data"]] + [s["folder"] for s in record["stages"] if s["kind"] in SHARED_KINDS]
    for folder in folders:
        source, target = default_run / folder, variant_run / folder
        if target.exists():
            continue
        # Linked into a side folder and renamed in one step: an interrupted link never looks like a finished stage.
        partial = variant_run / f".linking-{folder}"
        shutil.rmtree(partial, ignore_errors=True)  # our own leftover from an interrupted link, never a user's folder
        for path in sorted(source.rglob("*")):
            dest = partial / path.relative_to(source)
            if path.is_dir():
                dest.mkdir(parents=True, exist_ok=True)
            else:
                dest.parent.mkdir(parents=True, exist_ok=True)
                os.link(path, dest)
        partial.mkdir(parents=True, exist_ok=True)
        os.replace(partial, target)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--default-run", default=str(ROOT / "runs" / "minilm-rotten-tomatoes"))
    parser.add_argument("--work", default=str(ROOT / "runs" / "shape-sweep"), help="one run folder per variant")
    parser.add_argument("--out", default=str(ROOT / "benchmarks" / "results"))
    parser.add_argument("--fresh", action="store_true", help="measure each variant's bench again")
    args = parser.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    default_run = Path(args.default_run)
    if not (default_run / "run.json").is_file():
        parser.error(f"{default_run}/run.json not found: run the default pipeline first (make demo)")
    for name in args.variants:
        config = variant_config(name)
        run_dir = Path(args.work) / name / config.name
        run_dir.mkdir(parents=True, exist_ok=True)
        link_shared_stages(default_run, run_dir)
        logging.info("variant %s: %s, in %s", name, " ".join(VARIANTS[name]), run_dir)
        result = run_pipeline(config, run_dir=run_dir, force=frozenset({"bench"}) if args.fresh else frozenset())
        if next(r for r in result.stages if r.kind == "teacher").status != "skipped":
            logging.warning("variant %s trained its own teacher (the default run's teacher key differs: other "
                            "library versions or settings); frontier.md keeps it apart from the default's", name)
        stem, _ = write_result(result, config.name, Path(args.out), {"name": name, "overrides": VARIANTS[name]})
        print(f"wrote {stem}.json and {stem}.md")
    from frontier import RESULTS, render
    from readme_results import update_readme

    atomic_write_text(RESULTS / "frontier.md", render())
    update_readme()  # its frontier line names each variant; its numbers stay the newest default result's
    print("benchmarks/results/frontier.md and the README's frontier line rewritten")
    return 0


if __name__ == "__main__":
    sys.exit(main())
