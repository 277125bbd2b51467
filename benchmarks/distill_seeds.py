"""Does distillation beat hard labels by more than seed noise? Both students over several seeds.

    python benchmarks/distill_seeds.py [RUN_DIR] [--seeds 0 1 2] [--epochs N] [--out DIR] [--work DIR]

Reads a finished run of the default pipeline (default runs/minilm-rotten-tomatoes): its teacher, pruned
model, data splits and the distill stage's config, all found through the stage manifests. For each seed
it trains two students from the same pruned weights with the distill stage's budget (epochs, batch size,
learning rate, warm-up, early stopping on validation): the distilled student (the distill stage's loss)
and the hard-label student (cross-entropy only, every distillation weight at 0). The seed changes
dropout and batch order; the starting weights and the splits stay fixed. Checkpoints are selected on
validation accuracy; test accuracy and macro-F1 are reported, never used to select anything.

Writes <out>/<UTC stamp>-distill-seeds.json and .md: per-seed numbers, mean, standard deviation (n - 1)
and min-max per arm, and the difference of means against the seed spread, defined as the larger of the
two arms' max-min ranges. Each (seed, arm) result is stored in the work folder as soon as it finishes,
so an interrupted run resumes where it stopped: run the same command again. Each run is a full
distillation (minutes on a CPU); --epochs 1 gives a quick check.
"""

import argparse
import json
import logging
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from edgekd._train_config import TrainingFields  # noqa: E402
from edgekd.ablation.config import HARD_LABELS, AblationConfig  # noqa: E402
from edgekd.ablation.core import distill_stage_manifest, loss_weights, train_variants, variant_configs  # noqa: E402
from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest, stage_outputs  # noqa: E402
from edgekd.data.split import load_splits  # noqa: E402
from edgekd.distill.config import DistillConfig  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.evaluate import evaluate  # noqa: E402
from edgekd.pipeline import content_hash  # noqa: E402

log = logging.getLogger("distill_seeds")
SCHEMA = "edgekd.distill-seeds/v1"
DISTILLED = "distilled"
ARMS = (DISTILLED, HARD_LABELS)
METRICS = ("validation_accuracy", "test_accuracy", "test_macro_f1")
SPREAD = "the larger of the two arms' max-min ranges over the seeds"


@dataclass
class FinishedRun:
    """What this script reads from a finished run directory."""

    run_dir: Path
    data_dir: Path
    teacher_dir: Path
    pruned_dir: Path
    distill: dict  # the distill stage's manifest (config, key, metrics, folder)
    max_length: int


def read_run(run_dir: Path) -> FinishedRun:
    """The teacher, pruned model, splits and distill manifest of a finished run, via its manifests."""
    summary = run_dir / "run.json"
    if not summary.is_file():
        raise EdgekdError(f"{run_dir} is not a finished run directory (no run.json); run its pipeline first")
    run = json.loads(summary.read_text())
    history, artifacts = [], {}
    for folder in [s["folder"] for s in run["stages"]]:
        manifest = read_manifest(run_dir / folder)
        if manifest is None:
            raise EdgekdError(f"{run_dir / folder}: manifest.json is missing; rerun the pipeline to recompute it")
        history.append({**manifest, "folder": folder})
        artifacts.update(stage_outputs(run_dir / folder, manifest))
    missing = [name for name in ("teacher", "pruned") if name not in artifacts]
    if missing:
        raise EdgekdError(f"{run_dir}: the run has no {' or '.join(missing)} model; this script needs a run of "
                          "teacher, prune and distill stages")
    distill = distill_stage_manifest(history)
    return FinishedRun(run_dir, run_dir / run["data"], artifacts["teacher"].path, artifacts["pruned"].path, distill,
                       distill["key"]["settings"]["max_length"])


def arm_configs(distill_cfg: DistillConfig, epochs: int | None) -> dict[str, DistillConfig]:
    """{arm: config}: the distill stage's own config and its hard-label twin, epochs overridden if asked."""
    hard = variant_configs(distill_cfg, AblationConfig())[HARD_LABELS]
    arms = {DISTILLED: distill_cfg, HARD_LABELS: hard}
    if epochs is not None:
        arms = {name: cfg.model_copy(update={"epochs": epochs}) for name, cfg in arms.items()}
    return arms


def work_folder(root: Path, run: FinishedRun, arms: dict[str, DistillConfig]) -> Path:
    """A folder per (distill stage as made, arm configs): results of another budget never mix in."""
    key = {"distill": f"{run.distill['hash']}@{run.distill.get('instance')}",
           "arms": {name: cfg.model_dump(mode="json") for name, cfg in arms.items()}}
    return root / content_hash(key)


def train_and_score(run: FinishedRun, arm: str, cfg: DistillConfig, seed: int, work: Path) -> dict:
    """Train one student, score it on validation and test (test reported only), store the result."""
    splits = load_splits(run.data_dir)
    logits_path = work / "teacher_logits.npy"  # [N_train, C], shared by every distilled run
    cached = np.load(logits_path) if logits_path.is_file() else None
    trained = next(train_variants(str(run.teacher_dir), str(run.pruned_dir), splits, {arm: cfg}, seed,
                                  run.max_length, teacher_logits=cached))
    if trained.teacher_logits is not None and cached is None:
        np.save(logits_path, trained.teacher_logits)
    n, r = len(splits.label_names), trained.result
    val = evaluate(trained.model, trained.tokenizer, splits.validation, n, run.max_length)
    test = evaluate(trained.model, trained.tokenizer, splits.test, n, run.max_length)
    result = {"seed": seed, "arm": arm, "loss_weights": loss_weights(cfg), "epochs_run": r.epochs_run,
              "best_epoch": r.best_epoch, "steps": r.steps, "train_seconds": round(r.seconds, 1),
              "validation_accuracy": val["accuracy"], "validation_macro_f1": val["macro_f1"],
              "test_accuracy": test["accuracy"], "test_macro_f1": test["macro_f1"]}
    atomic_write_json(work / f"seed-{seed}-{arm}.json", result)
    return result


def spread_stats(values: list[float]) -> dict[str, float]:
    v = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(v.mean()), 6), "std": round(float(v.std(ddof=1)) if v.size > 1 else 0.0, 6),
            "min": round(float(v.min()), 6), "max": round(float(v.max()), 6),
            "range": round(float(v.max() - v.min()), 6), "n": int(v.size)}


def summarise(results: dict[str, list[dict]]) -> tuple[dict, dict]:
    """Per-arm statistics of each metric, and the difference of means against the seed spread."""
    stats = {arm: {m: spread_stats([r[m] for r in runs]) for m in METRICS} for arm, runs in results.items()}
    comparison = {}
    for m in METRICS:
        d, h = stats[DISTILLED][m], stats[HARD_LABELS][m]
        diff, spread = round(d["mean"] - h["mean"], 6), max(d["range"], h["range"])
        # One seed has no spread to compare against: None, not a "yes" against a spread of 0.
        exceeds = abs(diff) > spread if min(d["n"], h["n"]) >= 2 else None
        comparison[m] = {"difference_of_means": diff, "spread": spread, "exceeds_spread": exceeds}
    return stats, comparison


def render_markdown(result: dict) -> str:
    pct = lambda x: f"{100 * x:.2f}%"  # noqa: E731
    budget, arms = result["budget"], result["arms"]
    verdict = {True: "yes", False: "no", None: "– (one seed)"}
    weights = lambda arm: ", ".join(f"{k} {v:g}" for k, v in arms[arm]["loss_weights"].items())  # noqa: E731
    lines = [f"# Distilled vs hard-label student over {len(result['seeds'])} seeds", "",
             f"Run `{result['run_dir']}` (distill stage `{result['distill_stage']}`), measured {result['measured']}. "
             f"Both arms start from the same pruned weights and train with the distill stage's budget: "
             f"{budget['epochs']} epoch(s) at most, batch {budget['batch_size']}, learning rate "
             f"{budget['learning_rate']}, early stopping on validation (patience {budget['patience']}). The seed changes "
             "dropout and batch order; the splits stay fixed. Test numbers are reported only, never used to select.",
             "", f"Loss weights: distilled {weights(DISTILLED)}; hard-label {weights(HARD_LABELS)}.", "",
             "| seed | distilled val acc | distilled test acc | distilled test macro-F1 | hard-label val acc | "
             "hard-label test acc | hard-label test macro-F1 |", "|---|---|---|---|---|---|---|"]
    for i, seed in enumerate(result["seeds"]):
        d, h = arms[DISTILLED]["runs"][i], arms[HARD_LABELS]["runs"][i]
        lines.append(f"| {seed} | {pct(d['validation_accuracy'])} | {pct(d['test_accuracy'])} | "
                     f"{d['test_macro_f1']:.4f} | {pct(h['validation_accuracy'])} | {pct(h['test_accuracy'])} | "
                     f"{h['test_macro_f1']:.4f} |")
    lines += ["", f"Spread: {SPREAD}. Mean ± standard deviation (n - 1) [min–max].", "",
              "| metric | distilled | hard-label | difference of means | spread | beyond the spread? |",
              "|---|---|---|---|---|---|"]
    for m in METRICS:
        cell = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}–{s['max']:.4f}]"  # noqa: E731
        c = result["comparison"][m]
        lines.append(f"| {m} | {cell(arms[DISTILLED]['summary'][m])} | {cell(arms[HARD_LABELS]['summary'][m])} | "
                     f"{c['difference_of_means']:+.4f} | {c['spread']:.4f} | {verdict[c['exceeds_spread']]} |")
    return "\n".join(lines) + "\n"


def run_seeds(run_dir: Path, seeds: list[int], epochs: int | None, out: Path, work_root: Path | None) -> Path:
    """Train what is missing, summarise, write the two result files; returns the JSON's path."""
    from edgekd.versions import library_versions, machine_info

    run = read_run(run_dir)
    distill_cfg = DistillConfig.model_validate(run.distill["config"])
    arms = arm_configs(distill_cfg, epochs)
    work = work_folder(work_root or run_dir / "distill-seeds", run, arms)
    work.mkdir(parents=True, exist_ok=True)
    log.info("work folder %s (finished seeds there are reused)", work)
    results: dict[str, list[dict]] = {arm: [] for arm in ARMS}
    todo = len(seeds) * len(ARMS)
    for i, (seed, arm) in enumerate(((s, a) for s in seeds for a in ARMS), 1):
        stored = work / f"seed-{seed}-{arm}.json"
        if stored.is_file():
            log.info("[%d/%d] seed %d, %s: done before, reusing %s", i, todo, seed, arm, stored.name)
            results[arm].append(json.loads(stored.read_text()))
            continue
        log.info("[%d/%d] seed %d, %s: training (%d epoch(s) at most)", i, todo, seed, arm, arms[arm].epochs)
        results[arm].append(train_and_score(run, arm, arms[arm], seed, work))
        log.info("[%d/%d] seed %d, %s: validation accuracy %.4f, test accuracy %.4f", i, todo, seed, arm,
                 results[arm][-1]["validation_accuracy"], results[arm][-1]["test_accuracy"])
    stats, comparison = summarise(results)
    now = datetime.now(timezone.utc)
    result = {"schema": SCHEMA, "measured": now.isoformat(timespec="seconds"), "run_dir": str(run_dir),
              "distill_stage": run.distill["folder"], "max_length": run.max_length, "seeds": seeds,
              "epochs_override": epochs, "budget": {k: getattr(arms[DISTILLED], k) for k in TrainingFields.model_fields},
              "arms": {arm: {"loss_weights": loss_weights(arms[arm]), "runs": results[arm], "summary": stats[arm]}
                       for arm in ARMS},
              "comparison": comparison, "spread_definition": SPREAD,
              "machine": machine_info(), "versions": library_versions()}
    stem = out / f"{now.strftime('%Y-%m-%dT%H%M%S')}-distill-seeds"
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(result))
    log.info("wrote %s.json and %s.md", stem, stem)
    return stem.with_suffix(".json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "runs" / "minilm-rotten-tomatoes",
                        help="a finished run directory with teacher, prune and distill stages "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED",
                        help="training seeds, distinct and >= 0; each trains both students (default: 0 1 2)")
    parser.add_argument("--epochs", type=int, default=None,
                        help="train every student for this many epochs at most instead of the distill stage's "
                             "(a quick check; results are kept apart from full-budget ones)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder of the result files <UTC stamp>-distill-seeds.json and .md (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder keeping each finished (seed, student) result, for resuming "
                             "(default: RUN_DIR/distill-seeds)")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds: give distinct seeds >= 0 (got {' '.join(map(str, args.seeds))})")
    if args.epochs is not None and args.epochs < 1:
        parser.error(f"--epochs: at least 1 (got {args.epochs})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_seeds(args.run_dir.resolve(), args.seeds, args.epochs, args.out, args.work)
    except EdgekdError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
