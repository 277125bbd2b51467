"""run_lm_benchmark(): the causal-LM workload inside the classifier bench's design.

One worker process per model (edgekd.bench.lm_worker), all loaded up front; for each thread setting, rounds
in which every model takes its turn (the order rotates) generating from the same prompts: prefill, time to
first token, then new_tokens greedy steps with the KV cache. Speed-ups are paired per round (decode tokens/s
and prefill) against each reference row. Quality (perplexity, next-token accuracy, top-1 agreement with the
teacher, teacher-forced) is computed once per model after the timing, after its peak RSS was read.
"""

import logging
import time

import numpy as np

from edgekd.bench.config import BenchConfig
from edgekd.bench.core import DEPLOY_RUNTIME, PAUSE_S, LoadSampler, Target, WorkerProcess, thread_settings
from edgekd.bench.lm_inputs import LMInputs
from edgekd.bench.stats import cv, latency_stats, median_interval, paired_speedup
from edgekd.errors import EdgekdError
from edgekd.versions import library_versions, machine_info

log = logging.getLogger(__name__)
LM_SCHEMA = "edgekd.bench-lm/v1"


class LMWorkerProcess(WorkerProcess):
    module = "edgekd.bench.lm_worker"

    def load_command(self, job: dict, inputs: LMInputs, cfg: BenchConfig) -> dict:
        return {"op": "load", "target": job, "inputs": str(inputs.npz), "new_tokens": cfg.lm_settings().new_tokens}


def setting_key(cfg: BenchConfig, tag: str) -> str:
    """"p64_n32_t1": prompt tokens, new tokens, thread setting."""
    lm = cfg.lm_settings()
    return f"p{lm.prompt_tokens}_n{lm.new_tokens}_{tag}"


def run_lm_benchmark(targets: list[Target], inputs: LMInputs, cfg: BenchConfig, references: list[str] = (),
                     teacher: str | None = None) -> dict:
    """Measure every target (``target.inputs``, else ``inputs``); rows get paired speed-ups vs each of
    ``references`` and top-1 agreement with the ``teacher`` row (a row name) where both share inputs."""
    if not targets:
        raise EdgekdError("nothing to benchmark: no model was given")
    generator = DEPLOY_RUNTIME.with_name("edgekd_generate.py")  # the ONNX decode loop both ONNX runners share
    if not generator.is_file() and any(t.runtime in ("onnxruntime", "bundle") for t in targets):
        raise EdgekdError(f"timing a causal LM on onnxruntime needs {generator.name}, which ships with a source "
                          "checkout of edgekd (pip install -e .)")
    lm = cfg.lm_settings()
    threads = thread_settings(cfg.threads)
    workers: list[LMWorkerProcess] = []
    try:
        for i, target in enumerate(targets, 1):
            log.info("[load %d/%d] %s", i, len(targets), target.name)
            workers.append(LMWorkerProcess(target, target.inputs or inputs, cfg))
        timed = [w for w in workers if w.target.timed]
        first = {w.target.name: w.send({"op": "first"})["first_s"] for w in timed}
        timings: dict[str, dict[str, list[dict]]] = {w.target.name: {} for w in workers}
        with LoadSampler() as load:
            for tag, count in threads.items():
                for w in timed:
                    w.send({"op": "threads", "n": count})
                    w.send({"op": "warmup", "n": lm.warmup})
                for r in range(cfg.rounds):
                    start = time.perf_counter()
                    for k in range(len(timed)):
                        w = timed[(k + r) % len(timed)]  # rotate who goes first
                        keep_ids = r == 0 and tag == next(iter(threads))
                        reply = w.send({"op": "round", "turn_warmup": lm.turn_warmup, "ids": keep_ids})
                        timings[w.target.name].setdefault(tag, []).append(reply)
                        time.sleep(PAUSE_S)
                    log.info("threads %s (%d), round %d/%d: %d models generated from %d prompts in %.0f s", tag, count,
                             r + 1, cfg.rounds, len(timed), lm.prompts, time.perf_counter() - start)
        rss = {w.target.name: w.send({"op": "rss"})["peak_rss_mb"] for w in workers}  # before scoring's logits
        scores = {}
        for w in workers:
            w.send({"op": "threads", "n": max(threads.values())})
            scores[w.target.name] = w.send({"op": "score"})
            log.info("quality of %s done", w.target.name)
    finally:
        for w in workers:
            w.close()
    rows = []
    for w in workers:
        name = w.target.name
        row = {**w.target.describe(), "inputs": (w.target.inputs or inputs).npz.name, "load_s": round(w.load_s, 3),
               **({"first_token_ms": round(1000 * first[name], 3)} if name in first else {}),
               "peak_rss_mb": rss[name], "rounds": cfg.rounds if w.target.timed else 0,
               **_timing_summary(timings[name], cfg)}
        row.update(_quality(scores[name]))
        rows.append(row)
    predicted = {w.target.name: (w.target.inputs or inputs).npz for w in workers}
    _add_agreement(rows, scores, predicted, teacher)
    for reference in references:
        _add_speedups(rows, reference)
    summary = load.summary()
    cores = summary["cores"]
    disturbed = summary["other_processes_cores_mean"] > cfg.max_other_cpu * cores
    result = {"schema": LM_SCHEMA, "task": "causal-lm", "config": cfg.model_dump(mode="json"),
              "lm": lm.model_dump(mode="json"), "machine": machine_info(), "versions": library_versions(),
              "threads": threads, "settings": [setting_key(cfg, t) for t in threads],
              "inputs": {"prompts": inputs.prompts, "prompt_tokens": inputs.prompt_tokens, "windows": inputs.windows,
                         "window_tokens": inputs.window_tokens, "describe": inputs.describe},
              "load": {**summary, "limit_cores": round(cfg.max_other_cpu * cores, 3), "disturbed": disturbed},
              "references": list(references), "agreement_reference": teacher, "rows": rows}
    if disturbed:
        msg = (f"other processes used {summary['other_processes_cores_mean']:.2f} of {cores} cores on average while "
               f"the benchmark ran (limit {cfg.max_other_cpu:.0%} of the cores): timings are disturbed")
        if cfg.strict:
            raise EdgekdError(msg + "; refused (strict)")
        log.warning(msg)
    return result


def _timing_summary(per_setting: dict[str, list[dict]], cfg: BenchConfig) -> dict:
    out = {"prefill_ms": {}, "ttft_ms": {}, "decode_tokens_per_s": {}, "rounds_prefill_p50_ms": {}, "cv": {}}
    for tag, rounds in per_setting.items():
        key = setting_key(cfg, tag)
        prefill = np.asarray([r["prefill"] for r in rounds])  # [rounds, prompts] seconds
        out["prefill_ms"][key] = latency_stats(prefill.ravel())
        out["ttft_ms"][key] = latency_stats(np.asarray([r["ttft"] for r in rounds]).ravel())
        out["rounds_prefill_p50_ms"][key] = [round(float(np.median(p)) * 1000, 4) for p in prefill]
        # Per round: every decode step of every prompt, (new_tokens - 1) each, over their summed seconds.
        rates = [sum(n - 1 for n in r["new_tokens"]) / max(sum(r["decode"]), 1e-12) for r in rounds]
        out["decode_tokens_per_s"][key] = {**median_interval(rates), "rounds": [round(x, 3) for x in rates]}
        out["cv"][key] = cv(rates)
        if "ids" in rounds[0]:
            out["greedy_tokens"] = rounds[0]["ids"]  # [prompts, new_tokens] of the first round
    return out


def _quality(score: dict) -> dict:
    if not score.get("scored"):
        return {"perplexity": None, "next_token_accuracy": None}
    tokens = score["tokens"]
    return {"perplexity": round(float(np.exp(score["nll_sum"] / tokens)), 4),
            "next_token_accuracy": round(score["correct"] / tokens, 6), "eval_tokens": tokens}


def _add_agreement(rows: list[dict], scores: dict[str, dict], inputs: dict[str, object], teacher: str | None) -> None:
    """Teacher-forced top-1 agreement with the teacher row on the same windows (same tokenisation only)."""
    ref = scores.get(teacher, {}).get("predicted") if teacher else None
    for row in rows:
        pred = scores[row["name"]].get("predicted")
        same = ref is not None and pred is not None and inputs[row["name"]] == inputs[teacher]
        row["agreement_with_teacher"] = round(float((np.asarray(pred) == np.asarray(ref)).mean()), 6) if same else None


def _add_speedups(rows: list[dict], reference: str) -> None:
    """row["speedup_vs"][reference][setting] = paired per-round ratios: decode tokens/s (row / reference) and
    prefill (reference p50 ms / row p50 ms); above 1 means this row is faster."""
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is None:
        raise EdgekdError(f"reference {reference!r} is not one of the benchmarked rows: "
                          f"{', '.join(r['name'] for r in rows)}")
    for row in (r for r in rows if r.get("timed", True)):
        row.setdefault("speedup_vs", {})[reference] = {
            key: {"decode_tokens_per_s": paired_speedup(rate["rounds"], ref["decode_tokens_per_s"][key]["rounds"]),
                  "prefill": paired_speedup(ref["rounds_prefill_p50_ms"][key], row["rounds_prefill_p50_ms"][key])}
            for key, rate in row["decode_tokens_per_s"].items() if key in ref["decode_tokens_per_s"]}
