"""Does distilling a causal LM beat plain next-token training by more than seed noise? Both students, several seeds.

    python benchmarks/lm_distill_seeds.py [RUN_DIR] [--seeds 0 1 2] [--max-steps N] [--eval-windows N]
                                          [--out DIR] [--work DIR]

Reads a finished causal-lm run (default runs/smollm2-bbc): its teacher, pruned model, document splits
and the distill stage's config, all found through the stage manifests. For each seed it trains two
students from the same pruned weights with the distill stage's config: the distilled student (its KD
loss, alpha, teacher-written text) and the non-distilled student, as the ablation stage trains it
(alpha 0, no teacher-written text, exactly as many steps of the same batch size as the distilled
student took in that seed: the same training tokens, no early stop). The seed changes batch order,
the teacher's sampled text and dropout (if the model has any); the starting weights and the splits
stay fixed. Checkpoints are selected on validation perplexity (the run's validation windows); test
perplexity and next-token accuracy on evenly spaced test windows are reported, never used to select.

Writes <out>/<UTC stamp>-lm-distill-seeds.json and .md: per-seed numbers, mean, standard deviation
(n - 1) and min-max per arm, and the difference of means against the seed spread, defined as the
larger of the two arms' max-min ranges. Lower perplexity is better: the distilled student beats the
other beyond the spread when (non-distilled mean - distilled mean) > spread. Each (seed, arm) result is
stored in the work folder as soon as it finishes, so an interrupted run resumes where it stopped: run
the same command again. --max-steps 20 gives a quick check.
"""

import argparse
import json
import logging
import math
import sys
from dataclasses import dataclass
from datetime import datetime, timezone
from functools import cached_property
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.ablation.config import HARD_LABELS  # noqa: E402
from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest, stage_outputs  # noqa: E402
from edgekd.distill.config import DistillConfig, GeneratedTextConfig  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.pipeline import content_hash  # noqa: E402
from edgekd.tasks.causal_lm import CausalLMTask  # noqa: E402
from distill_seeds import DISTILLED, SPREAD, spread_stats  # noqa: E402  (the classifier script's statistics)

log = logging.getLogger("lm_distill_seeds")
SCHEMA = "edgekd.lm-distill-seeds/v1"
ARMS = (DISTILLED, HARD_LABELS)  # distilled first: the other arm takes its steps
# (metric, lower is better)
METRICS = (("validation_perplexity", True), ("test_perplexity", True), ("test_next_token_accuracy", False))


@dataclass
class FinishedRun:
    """What this script reads from a finished causal-lm run directory, and the token windows it scores."""

    run_dir: Path
    data_dir: Path
    teacher_dir: Path
    pruned_dir: Path
    distill: dict  # the distill stage's manifest (config, key, metrics, folder)
    max_length: int
    eval_windows: int

    @cached_property
    def windows(self) -> dict[str, list[list[int]]]:
        """{train, validation, test}: [n, max_length] token ids each; tokenised once for every seed."""
        from edgekd.data.text import evenly_spaced
        from edgekd.models.io import load_tokenizer

        task, tokenizer = CausalLMTask(), load_tokenizer(str(self.pruned_dir))
        splits = task.load_splits(self.data_dir)
        test = evenly_spaced(task.windows(tokenizer, splits, "test", self.max_length), self.eval_windows)
        out = {"train": task.windows(tokenizer, splits, "train", self.max_length),
               "validation": task.validation_windows(tokenizer, splits, self.max_length), "test": test}
        log.info("windows of %d tokens: %s", self.max_length, ", ".join(f"{len(w)} {k}" for k, w in out.items()))
        return out


def read_run(run_dir: Path, eval_windows: int) -> FinishedRun:
    """The teacher, pruned model, splits and distill manifest of a finished causal-lm run, via its manifests."""
    summary = run_dir / "run.json"
    if not summary.is_file():
        raise EdgekdError(f"{run_dir} is not a finished run directory (no run.json); run its pipeline first")
    run = json.loads(summary.read_text())
    task = run.get("pipeline", {}).get("task", "text-classification")
    if task != "causal-lm":
        raise EdgekdError(f"{run_dir}: task {task}; this script compares causal-LM students (for a classifier run "
                          "use benchmarks/distill_seeds.py)")
    history, artifacts = [], {}
    for folder in [s["folder"] for s in run["stages"]]:
        manifest = read_manifest(run_dir / folder)
        if manifest is None:
            raise EdgekdError(f"{run_dir / folder}: manifest.json is missing; rerun the pipeline to recompute it")
        history.append({**manifest, "folder": folder})
        artifacts.update(stage_outputs(run_dir / folder, manifest))
    distill = next((h for h in reversed(history) if h.get("kind") == "distill" and "student" in h.get("outputs", {})),
                   None)
    missing = [name for name in ("teacher", "pruned") if name not in artifacts] + ([] if distill else ["distill"])
    if missing:
        raise EdgekdError(f"{run_dir}: the run has no {' or '.join(missing)} stage output; this script needs a "
                          "causal-lm run of teacher, prune and distill stages")
    return FinishedRun(run_dir, run_dir / run["data"], artifacts["teacher"].path, artifacts["pruned"].path, distill,
                       distill["key"]["settings"]["max_length"], eval_windows)


def cross_entropy_config(distilled: DistillConfig, steps: int, train_windows: int) -> DistillConfig:
    """The non-distilled twin, as edgekd/ablation/lm_stage.py builds it: alpha 0, no teacher-written text,
    ``steps`` steps of the same batch size over the training windows alone, no early stop."""
    epochs = max(1, math.ceil(steps / math.ceil(train_windows / distilled.batch_size)))
    lm = distilled.lm_settings().model_copy(update={"generated": GeneratedTextConfig()})
    return distilled.model_copy(update={"alpha": 0.0, "lm": lm, "max_steps": steps, "epochs": epochs,
                                        "patience": epochs})


def work_folder(root: Path, run: FinishedRun, distilled: DistillConfig) -> Path:
    """A folder per (distill stage as made, arm budget, test windows): other budgets never mix in."""
    key = {"distill": f"{run.distill['hash']}@{run.distill.get('instance')}",
           "distilled": distilled.model_dump(mode="json"), "eval_windows": run.eval_windows,
           "other_arm": "alpha 0, no generated text, the distilled arm's steps"}
    return root / content_hash(key)


def train_and_score(run: FinishedRun, arm: str, cfg: DistillConfig, seed: int, work: Path) -> dict:
    """Train one student from the pruned weights, score it on validation and test (test reported only), store it."""
    from edgekd.distill.causal_lm import distill_causal_lm
    from edgekd.models.io import torch_device
    from edgekd.tasks.causal_lm import load_causal_lm

    task, windows, device = CausalLMTask(), run.windows, torch_device(cfg.device)
    student, tokenizer = load_causal_lm(str(run.pruned_dir))
    teacher = load_causal_lm(str(run.teacher_dir))[0] if arm == DISTILLED else None
    val = windows["validation"]
    trained = distill_causal_lm(student, teacher, windows["train"], val, cfg, seed, device, tokenizer.eos_token_id,
                                evaluate=lambda m: task.scores(m, val, device))
    fit, lm = trained.fit, cfg.lm_settings()
    v, t = task.scores(student, val, device), task.scores(student, windows["test"], device)
    kind = lm.loss if cfg.alpha > 0 else "cross-entropy"
    result = {"seed": seed, "arm": arm, "loss": {"kind": kind, "alpha": cfg.alpha, "temperature": cfg.temperature,
                                                 "generated_sequences": trained.generated_windows},
              "steps": fit.steps, "tokens_seen": fit.steps * cfg.batch_size * run.max_length,
              "epochs_run": fit.epochs_run, "best_epoch": fit.best_epoch, "train_seconds": round(fit.seconds, 1),
              "validation_perplexity": v["perplexity"], "validation_next_token_accuracy": v["next_token_accuracy"],
              "test_perplexity": t["perplexity"], "test_next_token_accuracy": t["next_token_accuracy"]}
    atomic_write_json(work / f"seed-{seed}-{arm}.json", result)
    return result


def summarise(results: dict[str, list[dict]]) -> tuple[dict, dict]:
    """Per-arm statistics of each metric; the distilled arm's gain (in the metric's better direction) vs the spread."""
    stats = {arm: {m: spread_stats([r[m] for r in runs]) for m, _ in METRICS} for arm, runs in results.items()}
    comparison = {}
    for m, lower_is_better in METRICS:
        d, h = stats[DISTILLED][m], stats[HARD_LABELS][m]
        diff, spread = round(d["mean"] - h["mean"], 6), max(d["range"], h["range"])
        gain = -diff if lower_is_better else diff  # > 0: the distilled student is better
        # One seed has no spread to compare against: None, not a "yes" against a spread of 0.
        beats = gain > spread if min(d["n"], h["n"]) >= 2 else None
        comparison[m] = {"difference_of_means": diff, "distilled_gain": round(gain, 6), "spread": spread,
                         "lower_is_better": lower_is_better, "distilled_beats_beyond_spread": beats}
    return stats, comparison


def render_markdown(result: dict) -> str:
    budget, arms, seeds = result["budget"], result["arms"], result["seeds"]
    verdict = {True: "yes", False: "no", None: "– (one seed)"}
    steps = f"{budget['max_steps']} steps at most" if budget["max_steps"] else f"{budget['epochs']} epoch(s)"
    d_loss = arms[DISTILLED]["runs"][0]["loss"]
    lines = [f"# Distilled vs non-distilled causal-LM student over {len(seeds)} seeds", "",
             f"Run `{result['run_dir']}` (distill stage `{result['distill_stage']}`), measured {result['measured']}. "
             f"Both students start from the same pruned weights. Distilled: {d_loss['kind']}, alpha "
             f"{d_loss['alpha']:g}, temperature {d_loss['temperature']:g}, {steps} of batch {budget['batch_size']}, "
             f"learning rate {budget['learning_rate']}. Non-distilled: next-token cross-entropy only, no "
             "teacher-written text, exactly the distilled student's steps in that seed (the same tokens). Windows "
             f"of {result['max_length']} tokens: {result['windows']['train']} train, "
             f"{result['windows']['validation']} validation (select checkpoints), {result['windows']['test']} test "
             "(reported only).", "",
             "| seed | steps | distilled val ppl | distilled test ppl | distilled test acc | non-distilled val ppl | "
             "non-distilled test ppl | non-distilled test acc |", "|---|---|---|---|---|---|---|---|"]
    for i, seed in enumerate(seeds):
        d, h = arms[DISTILLED]["runs"][i], arms[HARD_LABELS]["runs"][i]
        lines.append(f"| {seed} | {d['steps']} | {d['validation_perplexity']:.3f} | {d['test_perplexity']:.3f} | "
                     f"{100 * d['test_next_token_accuracy']:.2f}% | {h['validation_perplexity']:.3f} | "
                     f"{h['test_perplexity']:.3f} | {100 * h['test_next_token_accuracy']:.2f}% |")
    lines += ["", f"Spread: {SPREAD}. Mean ± standard deviation (n - 1) [min–max]. Gain: the distilled student's "
              "advantage in the metric's better direction (lower perplexity, higher accuracy).", "",
              "| metric | distilled | non-distilled | gain | spread | distilled better beyond the spread? |",
              "|---|---|---|---|---|---|"]
    cell = lambda s: f"{s['mean']:.4f} ± {s['std']:.4f} [{s['min']:.4f}–{s['max']:.4f}]"  # noqa: E731
    for m, _ in METRICS:
        c, beats = result["comparison"][m], result["comparison"][m]["distilled_beats_beyond_spread"]
        lines.append(f"| {m} | {cell(arms[DISTILLED]['summary'][m])} | {cell(arms[HARD_LABELS]['summary'][m])} | "
                     f"{c['distilled_gain']:+.4f} | {c['spread']:.4f} | {verdict[beats]} |")
    return "\n".join(lines) + "\n"


def run_seeds(run_dir: Path, seeds: list[int], max_steps: int | None, eval_windows: int, out: Path,
              work_root: Path | None) -> Path:
    """Train what is missing, summarise, write the two result files; returns the JSON's path."""
    from edgekd.versions import library_versions, machine_info

    run = read_run(run_dir, eval_windows)
    distilled = DistillConfig.model_validate(run.distill["config"])  # the distill stage's own config
    if max_steps is not None:
        distilled = distilled.model_copy(update={"max_steps": max_steps})
    work = work_folder(work_root or run_dir / "lm-distill-seeds", run, distilled)
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
        cfg = distilled if arm == DISTILLED else cross_entropy_config(
            distilled, results[DISTILLED][-1]["steps"], len(run.windows["train"]))
        log.info("[%d/%d] seed %d, %s: training (alpha %g, %s at most)", i, todo, seed, arm, cfg.alpha,
                 f"{cfg.max_steps} steps" if cfg.max_steps else f"{cfg.epochs} epoch(s)")
        results[arm].append(train_and_score(run, arm, cfg, seed, work))
        r = results[arm][-1]
        log.info("[%d/%d] seed %d, %s: %d steps, validation perplexity %.3f, test perplexity %.3f", i, todo, seed,
                 arm, r["steps"], r["validation_perplexity"], r["test_perplexity"])
    stats, comparison = summarise(results)
    now, metrics = datetime.now(timezone.utc), run.distill.get("metrics", {})
    budget = {k: getattr(distilled, k) for k in ("epochs", "max_steps", "batch_size", "learning_rate", "patience")}
    result = {"schema": SCHEMA, "measured": now.isoformat(timespec="seconds"), "run_dir": str(run_dir),
              "distill_stage": run.distill["folder"], "max_length": run.max_length, "seeds": seeds,
              "max_steps_override": max_steps, "eval_windows": eval_windows, "budget": budget,
              "windows": {k: len(w) for k, w in run.windows.items()},
              "distill_stage_validation": {"pruned": metrics.get("validation_before"),
                                           "distilled": metrics.get("validation")},
              "arms": {arm: {"runs": results[arm], "summary": stats[arm]} for arm in ARMS},
              "comparison": comparison, "spread_definition": SPREAD,
              "machine": machine_info(), "versions": library_versions()}
    stem = out / f"{now.strftime('%Y-%m-%dT%H%M%S')}-lm-distill-seeds"
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(result))
    log.info("wrote %s.json and %s.md", stem, stem)
    return stem.with_suffix(".json")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "runs" / "smollm2-bbc",
                        help="a finished causal-lm run directory with teacher, prune and distill stages "
                             "(default: %(default)s)")
    parser.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2], metavar="SEED",
                        help="training seeds, distinct and >= 0; each trains both students (default: 0 1 2)")
    parser.add_argument("--max-steps", type=int, default=None,
                        help="train the distilled student for this many steps at most instead of the distill "
                             "stage's budget; the other student takes as many (a quick check; results are kept "
                             "apart from full-budget ones)")
    parser.add_argument("--eval-windows", type=int, default=32,
                        help="test windows of model.max_length tokens scored, evenly spaced over the test split "
                             "(default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder of the result files <UTC stamp>-lm-distill-seeds.json and .md "
                             "(default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder keeping each finished (seed, student) result, for resuming "
                             "(default: RUN_DIR/lm-distill-seeds)")
    args = parser.parse_args(argv)
    if len(set(args.seeds)) != len(args.seeds) or min(args.seeds) < 0:
        parser.error(f"--seeds: give distinct seeds >= 0 (got {' '.join(map(str, args.seeds))})")
    for flag, value in (("--max-steps", args.max_steps), ("--eval-windows", args.eval_windows)):
        if value is not None and value < 1:
            parser.error(f"{flag}: at least 1 (got {value})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_seeds(args.run_dir.resolve(), args.seeds, args.max_steps, args.eval_windows, args.out, args.work)
    except EdgekdError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
