"""The causal-LM frontier: students by depth, FFN width and training tokens, each with its perplexity, speed and size.

    python benchmarks/lm_frontier.py [RUN_DIR] [--points 15x0.5@60 24x0@60 ...] [--rounds 3] [--out DIR] [--work DIR]

Reads a finished causal-lm run (default runs/smollm2-bbc): its tuned teacher, document splits and the prune and
distill stages' configs, found through the stage manifests. Each point LAYERSxFFN_RATIO@STEPS prunes the teacher
as the prune stage does (the run's layer selection, FFN importance, rounding and calibration windows), only to
LAYERS decoder layers and FFN ratio FFN_RATIO, then distils it from the teacher with the distill stage's config
for STEPS steps (the same batch size: STEPS x batch x max_length training tokens). Every point is then built with
ONNX Runtime GenAI's model builder at int4 (the peer's runtime and precision, so the peer is the like-for-like
reference) and scored:
- validation perplexity (what would select), test perplexity and next-token accuracy in PyTorch fp32 and test
  perplexity of the int4 build (reported only: nothing here is chosen on the test split); ratios are against the
  teacher's fp32 test perplexity, and the goal (meets_goal) reads the int4 build's, the model that is timed;
- decode tokens/s at 1 thread: greedy generation from the same test prompts, every model loaded once in this
  process, the models taking turns in each round (the order rotates), median per model over rounds; the peer
  (the teacher built the same way) is timed in the same rounds, and each point's speed-up is the median of its
  per-round ratios to the peer;
- the int4 model files' bytes.

Writes <out>/<UTC stamp>-lm-frontier.json and .md. Each trained point is kept in the work folder (its student
folder, GenAI build and scores) as soon as it finishes, so an interrupted run resumes: run the same command again.
Timing always reruns, all points together.
"""

import argparse
import json
import logging
import re
import shutil
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "benchmarks"))

from edgekd.artifacts import atomic_write_json, atomic_write_text, read_manifest  # noqa: E402
from edgekd.bench.lm_stage import model_bytes  # noqa: E402
from edgekd.distill.config import DistillConfig  # noqa: E402
from edgekd.errors import EdgekdError  # noqa: E402
from edgekd.pipeline import content_hash  # noqa: E402
from edgekd.prune.config import PruneConfig  # noqa: E402
from lm_distill_seeds import FinishedRun, read_run  # noqa: E402

log = logging.getLogger("lm_frontier")
SCHEMA = "edgekd.lm-frontier/v1"
POINT = re.compile(r"^(\d+)x([0-9.]+)@(\d+)$")
DEFAULT_POINTS = ["24x0@60", "15x0.5@60", "20x0@60", "15x0@60", "15x0.5@20", "24x0@120"]


def parse_point(text: str) -> tuple[int, float, int]:
    """'24x0.5@60' -> (24 layers, FFN ratio 0.5, 60 steps); one-line error otherwise."""
    match = POINT.match(text)
    if not match or not 0 <= float(match[2]) < 1:
        raise EdgekdError(f"point {text!r}: expected LAYERSxFFN_RATIO@STEPS, e.g. 24x0.5@60 (FFN ratio in [0, 1))")
    return int(match[1]), float(match[2]), int(match[3])


def prune_config(run: FinishedRun) -> PruneConfig:
    """The run's prune stage config (layer selection, importance, rounding, calibration)."""
    stages = json.loads((run.run_dir / "run.json").read_text())["stages"]
    folder = next((s["folder"] for s in stages if s["kind"] == "prune"), None)
    manifest = read_manifest(run.run_dir / folder) if folder else None
    if manifest is None:
        raise EdgekdError(f"{run.run_dir}: no prune stage manifest; this script needs a run with a prune stage")
    return PruneConfig.model_validate(manifest["config"])


def train_point(run: FinishedRun, teacher, prune: PruneConfig, distill: DistillConfig, point: str, folder: Path,
                seed: int) -> dict:
    """Prune a copy of the teacher to the point's shape, distil it, save it, build and score its int4 GenAI model."""
    import copy

    from edgekd.data.text import evenly_spaced
    from edgekd.distill.causal_lm import distill_causal_lm
    from edgekd.models.io import load_tokenizer, torch_device
    from edgekd.peer.genai import build_genai_model, genai_validation_scores
    from edgekd.prune.causal_lm import prune_causal_lm
    from edgekd.prune.lm_stage import LAYER_METHODS
    from edgekd.tasks.causal_lm import CausalLMTask

    layers, ffn_ratio, steps = parse_point(point)
    task, windows, device = CausalLMTask(), run.windows, torch_device(distill.device)
    tokenizer = load_tokenizer(str(run.pruned_dir))
    student = copy.deepcopy(teacher)
    calibration = evenly_spaced(windows["train"], prune.calibration_batches * prune.calibration_batch_size)
    shape = prune_causal_lm(student, calibration, keep_layers=layers, ffn_ratio=ffn_ratio,
                            layer_method=LAYER_METHODS.get(prune.layer_selection, "block_influence"),
                            multiple_of=prune.multiple_of, ffn_importance=prune.importance)
    val, test = windows["validation"], windows["test"]
    pruned_val = task.scores(student, val, device)
    cfg = distill.model_copy(update={"max_steps": steps})
    fit = None
    if steps:
        fit = distill_causal_lm(student, teacher, windows["train"], val, cfg, seed, device, tokenizer.eos_token_id,
                                evaluate=lambda m: task.scores(m, val, device)).fit
    v, t = task.scores(student, val, device), task.scores(student, test, device)
    task.save(student, tokenizer, folder / "model")
    build_genai_model(folder / "model", folder / "genai-int4", "int4")
    tokenizer.save_pretrained(folder / "genai-int4")
    int4 = genai_validation_scores(folder / "genai-int4", test)  # (the test windows here: reported only)
    result = {"point": point, "layers": layers, "ffn_ratio": ffn_ratio, "steps": steps,
              "tokens_seen": steps * cfg.batch_size * run.max_length, "seed": seed,
              "kept_layers": shape["kept_layers"], "ffn_after": shape["ffn_after"],
              "parameters": shape["parameters_after"], "train_seconds": round(fit.seconds, 1) if fit else 0.0,
              "pruned_validation_perplexity": pruned_val["perplexity"], "validation_perplexity": v["perplexity"],
              "test_perplexity": t["perplexity"], "test_next_token_accuracy": t["next_token_accuracy"],
              "int4_test_perplexity": int4["perplexity"],
              "int4_file_bytes": model_bytes(folder / "genai-int4")}
    atomic_write_json(folder / "point.json", result)
    return result


def time_models(folders: dict[str, Path], prompts: list[list[int]], new_tokens: int, rounds: int) -> dict:
    """{name: [tokens/s per round]}: every model loaded once, 1 thread, the order rotating each round."""
    from edgekd.peer.genai import GenAIRunner

    runners = {name: GenAIRunner.load({"path": str(path)}, threads=1) for name, path in folders.items()}
    names, speeds = list(runners), {name: [] for name in runners}
    for name in names:  # warm-up: first-call allocations are not part of any round
        runners[name].generate(prompts[0], 4)
    for r in range(rounds):
        order = names[r % len(names):] + names[:r % len(names)]
        for name in order:
            runs = [runners[name].generate(p, new_tokens) for p in prompts]
            # tokens/s over the round: decode tokens over decode seconds, summed over the prompts
            speeds[name].append(sum(x["new_tokens"] - 1 for x in runs) / sum(x["decode_s"] for x in runs))
        log.info("round %d/%d: %s", r + 1, rounds, ", ".join(f"{n} {speeds[n][-1]:.0f}" for n in names))
    for runner in runners.values():
        runner.close()
    return speeds


def render_markdown(result: dict) -> str:
    peer, rows = result["peer"], result["points"]
    lines = ["# Causal-LM frontier: students by depth, FFN width and training tokens", "",
             f"Run `{result['run_dir']}`, measured {result['measured']} on {result['machine']['cpu']}. Teacher: "
             f"{result['teacher']['layers']} layers, FFN {result['teacher']['ffn']}, test perplexity "
             f"{result['teacher']['test_perplexity']:.2f} (PyTorch fp32). Each student is the tuned teacher pruned "
             f"by the run's prune settings ({result['prune']}) and distilled with the run's distill settings "
             f"({result['distill']}) for the steps shown. Speed: ONNX Runtime GenAI int4 (model builder), 1 thread, "
             f"{result['timing']['prompts']} test prompts of {result['timing']['prompt_tokens']} tokens, "
             f"{result['timing']['new_tokens']} greedy new tokens, {result['timing']['rounds']} interleaved rounds; "
             f"the peer is the teacher built the same way ({peer['tokens_per_s']:.0f} tok/s, "
             f"{peer['file_bytes'] / 1e6:.1f} MB, int4 test perplexity {peer['int4_test_perplexity']:.2f}). "
             f"Test windows: {result['windows']['test']} of {result['max_length']} tokens (reported only).", "",
             f"Quantization alone: the peer's test perplexity is {peer['int4_test_perplexity'] / result['teacher']['test_perplexity']:.2f}× "
             "the teacher's fp32 one. Ratios are against the teacher in fp32; the goal reads the int4 one.", "",
             "| student | params (M) | training tokens | val ppl | test ppl fp32 (× teacher) | test ppl int4 (× teacher) | "
             "next-token acc | tok/s | vs peer [min–max] | size MB | vs peer size |",
             "|---|---|---|---|---|---|---|---|---|---|---|"]
    for p in rows:
        lines.append(
            f"| {p['layers']} layers, FFN {p['ffn_after']} ({p['steps']} steps) | {p['parameters'] / 1e6:.1f} | "
            f"{p['tokens_seen'] / 1e3:.0f}k | {p['validation_perplexity']:.1f} | {p['test_perplexity']:.1f} "
            f"({p['perplexity_ratio']:.2f}×) | {p['int4_test_perplexity']:.1f} ({p['int4_perplexity_ratio']:.2f}×) | "
            f"{100 * p['test_next_token_accuracy']:.1f}% "
            f"| {p['tokens_per_s']:.0f} | {p['speedup_vs_peer']['median']:.2f}× [{p['speedup_vs_peer']['min']:.2f}–"
            f"{p['speedup_vs_peer']['max']:.2f}] | {p['int4_file_bytes'] / 1e6:.1f} | "
            f"{peer['file_bytes'] / p['int4_file_bytes']:.2f}× |")
    lines += ["", "Pruned-only validation perplexity (before distillation): " + ", ".join(
        f"{p['layers']}x{p['ffn_after']} {p['pruned_validation_perplexity']:.0f}" for p in rows
        if p["steps"] == max(q["steps"] for q in rows if q["layers"] == p["layers"] and q["ffn_after"] == p["ffn_after"])),
        "", f"Goal of the default pipeline: int4 test perplexity ≤ 1.5× the teacher's and decode ≥ 1.5× the peer. "
        f"Points meeting both: {', '.join(p['point'] for p in rows if p['meets_goal']) or 'none'}.", ""]
    return "\n".join(lines)


def work_key(run: FinishedRun, prune: PruneConfig, eval_windows: int, seed: int) -> str:
    """What a stored point depends on. The teacher's folder is named by its stage's cache key (a retrained
    teacher gets another folder); the library versions cover the builder, pruning and training code."""
    from edgekd.versions import library_versions

    return content_hash({"teacher": str(run.teacher_dir), "distill": f"{run.distill['hash']}@{run.distill.get('instance')}",
                         "prune": prune.model_dump(mode="json"), "eval_windows": eval_windows, "seed": seed,
                         "versions": library_versions()})


def run_frontier(run_dir: Path, points: list[str], rounds: int, out: Path, work_root: Path | None,
                 eval_windows: int, prompts: int, new_tokens: int) -> Path:
    from edgekd.models.io import torch_device
    from edgekd.tasks.causal_lm import CausalLMTask, load_causal_lm
    from edgekd.versions import library_versions, machine_info

    for point in points:
        parse_point(point)
    run = read_run(run_dir, eval_windows)
    prune = prune_config(run)
    distill = DistillConfig.model_validate(run.distill["config"])
    seed = json.loads((run_dir / "run.json").read_text())["pipeline"].get("seed", 0)
    work = (work_root or run_dir / "lm-frontier") / work_key(run, prune, eval_windows, seed)
    work.mkdir(parents=True, exist_ok=True)
    log.info("work folder %s (finished points there are reused)", work)
    teacher = load_causal_lm(str(run.teacher_dir))[0]
    results = []
    for i, point in enumerate(points, 1):
        folder = work / point.replace("@", "-at-")
        if (folder / "point.json").is_file():
            log.info("[%d/%d] %s: done before, reusing", i, len(points), point)
            results.append(json.loads((folder / "point.json").read_text()))
            continue
        log.info("[%d/%d] %s: pruning and distilling", i, len(points), point)
        if folder.exists():  # an interrupted point of this script's own: start it again from nothing
            shutil.rmtree(folder)
        folder.mkdir()
        results.append(train_point(run, teacher, prune, distill, point, folder, seed))
        r = results[-1]
        log.info("[%d/%d] %s: test perplexity %.2f (int4 %.2f), %.1f MB", i, len(points), point, r["test_perplexity"],
                 r["int4_test_perplexity"], r["int4_file_bytes"] / 1e6)
    teacher_scores = CausalLMTask().scores(teacher, run.windows["test"], torch_device(distill.device))
    peer_folder = _peer_folder(run_dir)
    peer_bytes = model_bytes(peer_folder)
    test_prompts = [w[: run.max_length // 4] for w in run.windows["test"][:prompts]]
    speeds = time_models({"peer": peer_folder, **{r["point"]: work / r["point"].replace("@", "-at-") / "genai-int4"
                                                  for r in results}}, test_prompts, new_tokens, rounds)
    from edgekd.peer.genai import genai_validation_scores

    peer_int4 = genai_validation_scores(peer_folder, run.windows["test"])
    peer = {"folder": str(peer_folder), "file_bytes": peer_bytes, "tokens_per_s": statistics.median(speeds["peer"]),
            "per_round": speeds["peer"], "int4_test_perplexity": peer_int4["perplexity"]}
    for r in results:
        ratios = [s / p for s, p in zip(speeds[r["point"]], speeds["peer"])]
        r.update(tokens_per_s=statistics.median(speeds[r["point"]]), per_round=speeds[r["point"]],
                 speedup_vs_peer={"median": statistics.median(ratios), "min": min(ratios), "max": max(ratios)},
                 perplexity_ratio=round(r["test_perplexity"] / teacher_scores["perplexity"], 4),
                 int4_perplexity_ratio=round(r["int4_test_perplexity"] / teacher_scores["perplexity"], 4))
        # The goal is on the shipped (int4, timed) model against the teacher in fp32.
        r["meets_goal"] = r["int4_perplexity_ratio"] <= 1.5 and r["speedup_vs_peer"]["median"] >= 1.5
    now = datetime.now(timezone.utc)
    config = json.loads((run.teacher_dir / "config.json").read_text())
    result = {"schema": SCHEMA, "measured": now.isoformat(timespec="seconds"), "run_dir": str(run_dir),
              "max_length": run.max_length, "windows": {k: len(w) for k, w in run.windows.items()},
              "teacher": {"layers": config["num_hidden_layers"], "ffn": config["intermediate_size"],
                          "test_perplexity": teacher_scores["perplexity"],
                          "test_next_token_accuracy": teacher_scores["next_token_accuracy"]},
              "prune": f"layer selection {prune.layer_selection}, FFN importance {prune.importance}, multiple of "
                       f"{prune.multiple_of}",
              "distill": f"{distill.lm_settings().loss}, alpha {distill.alpha:g}, temperature {distill.temperature:g}, "
                         f"batch {distill.batch_size}, learning rate {distill.learning_rate:g}",
              "timing": {"runtime": "onnxruntime-genai int4, 1 thread", "prompts": len(test_prompts),
                         "prompt_tokens": len(test_prompts[0]), "new_tokens": new_tokens, "rounds": rounds},
              "peer": peer, "points": results, "machine": machine_info(), "versions": library_versions()}
    stem = out / f"{now.strftime('%Y-%m-%dT%H%M%S')}-lm-frontier"
    atomic_write_json(stem.with_suffix(".json"), result)
    atomic_write_text(stem.with_suffix(".md"), render_markdown(result))
    log.info("wrote %s.json and %s.md", stem, stem)
    return stem.with_suffix(".json")


def _peer_folder(run_dir: Path) -> Path:
    stages = json.loads((run_dir / "run.json").read_text())["stages"]
    folder = next((s["folder"] for s in stages if s["kind"] == "peer"), None)
    found = sorted((run_dir / folder).glob("peer.genai-int4")) if folder else []
    if not found:
        raise EdgekdError(f"{run_dir}: no int4 GenAI peer (peer stage with lm.precision int4); run the pipeline "
                          "with its peer stage first")
    return found[0]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", nargs="?", type=Path, default=ROOT / "runs" / "smollm2-bbc",
                        help="a finished causal-lm run with teacher, prune, distill and peer stages (default: %(default)s)")
    parser.add_argument("--points", nargs="+", default=DEFAULT_POINTS, metavar="LxR@S",
                        help="students: LAYERS kept, FFN ratio removed, distillation STEPS (default: %(default)s)")
    parser.add_argument("--rounds", type=int, default=3, help="timing rounds (default: %(default)s)")
    parser.add_argument("--prompts", type=int, default=2, help="test prompts per round (default: %(default)s)")
    parser.add_argument("--new-tokens", type=int, default=64, help="greedy tokens per prompt (default: %(default)s)")
    parser.add_argument("--eval-windows", type=int, default=32,
                        help="test windows scored, evenly spaced over the test split (default: %(default)s)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "results",
                        help="folder of <UTC stamp>-lm-frontier.json and .md (default: %(default)s)")
    parser.add_argument("--work", type=Path, default=None,
                        help="folder keeping each finished point, for resuming (default: RUN_DIR/lm-frontier)")
    args = parser.parse_args(argv)
    for flag in ("rounds", "prompts", "new_tokens", "eval_windows"):
        if getattr(args, flag) < 1:
            parser.error(f"--{flag.replace('_', '-')}: at least 1 (got {getattr(args, flag)})")
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s: %(message)s", datefmt="%H:%M:%S")
    try:
        run_frontier(args.run_dir.resolve(), args.points, args.rounds, args.out, args.work, args.eval_windows,
                     args.prompts, args.new_tokens)
    except EdgekdError as exc:
        log.error("%s", exc)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
