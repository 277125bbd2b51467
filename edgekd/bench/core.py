"""run_benchmark(): time several models on identical inputs, interleaved round by round.

Every model gets its own worker process (edgekd.bench.worker), loaded up front. For each thread
setting, each round times every model in turn (the order rotates from round to round) on the same
sample of inputs in the same order, so machine drift hits all models alike and a speed-up can be
taken per round, paired, instead of as a ratio of medians measured minutes apart.
"""

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from edgekd.bench.config import BenchConfig
from edgekd.bench.inputs import BenchInputs
from edgekd.bench.stats import by_length, cv, latency_stats, paired_accuracy_difference, paired_speedup
from edgekd.errors import EdgekdError
from edgekd.metrics import quality_report
from edgekd.versions import library_versions, machine_info

log = logging.getLogger(__name__)
SCHEMA = "edgekd.bench/v2"
# deploy/edgekd_runtime.py, which bundle rows run: it ships with a source checkout (the editable install).
DEPLOY_RUNTIME = Path(__file__).resolve().parents[2] / "deploy" / "edgekd_runtime.py"
# After a model's turn its runtime's idle threads may still spin for a few milliseconds; a pause
# keeps them from taking a core from the next model being timed.
PAUSE_S = 0.05


@dataclass
class Target:
    """One row of the benchmark: a model file or folder and the runtime that runs it."""

    name: str  # e.g. "student.int8-dynamic onnxruntime cpu"
    path: Path
    runtime: str  # "onnxruntime" | "pytorch" | "bundle"
    pad_id: int
    model: str = ""  # which model this is a version of: "teacher", "student", a file stem
    role: str = "model"  # "teacher" | "student" | "peer" | "model"
    format: str = "onnx"  # "onnx" | "pytorch" | "bundle"
    precision: str = "fp32"
    device: str = "cpu"
    file_bytes: int | None = None
    parameters: int | None = None
    # False: accuracy only (e.g. ablation models, not deployment candidates): its worker predicts every row
    # but sits out the timing rounds, and its row's timing fields (latency_ms, rounds_p50_ms...) are empty.
    timed: bool = True
    # This model's own tokenisation of the benchmark texts (same texts, sample and order, its own ids);
    # None: the inputs passed to run_benchmark, shared by every model with the same tokenizer.
    # (The causal-LM bench puts an edgekd.bench.lm_inputs.LMInputs here.)
    inputs: BenchInputs | None = None
    extra: dict = field(default_factory=dict)

    def describe(self) -> dict:
        return {"name": self.name, "model": self.model, "role": self.role, "format": self.format,
                "precision": self.precision, "runtime": self.runtime, "device": self.device,
                "file_bytes": self.file_bytes, "parameters": self.parameters, "timed": self.timed, **self.extra}


class WorkerProcess:
    """A running edgekd.bench.worker; ``send`` returns its reply or raises naming the model."""

    module = "edgekd.bench.worker"  # the causal-LM bench runs edgekd.bench.lm_worker (LMWorkerProcess)

    def __init__(self, target: Target, inputs: BenchInputs, cfg: BenchConfig):
        self.target = target
        self.stderr = tempfile.TemporaryFile(mode="w+")
        env = {**os.environ, "TOKENIZERS_PARALLELISM": "false"}
        self.proc = subprocess.Popen([sys.executable, "-m", self.module], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, stderr=self.stderr, text=True, env=env)
        job = {**target.describe(), "path": str(target.path), "pad_id": target.pad_id,
               "runtime_dir": str(DEPLOY_RUNTIME.parent)}
        try:
            self.load_s = self.send(self.load_command(job, inputs, cfg))["load_s"]
        except BaseException:
            self.close()  # not yet in the caller's list of workers, so nobody else would
            raise

    def load_command(self, job: dict, inputs: BenchInputs, cfg: BenchConfig) -> dict:
        return {"op": "load", "target": job, "inputs": str(inputs.npz),
                "texts": str(inputs.texts) if inputs.texts else None,
                "throughput": [cfg.throughput_batch, cfg.throughput_batches]}

    def send(self, cmd: dict) -> dict:
        self.proc.stdin.write(json.dumps(cmd) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            self.stderr.seek(0)
            tail = " | ".join(self.stderr.read().strip().splitlines()[-3:])
            raise EdgekdError(f"benchmark worker for {self.target.name} ({self.target.path}) exited "
                              f"(code {self.proc.wait()}): {tail}")
        reply = json.loads(line)
        if "error" in reply:
            raise EdgekdError(f"benchmark of {self.target.name} ({self.target.path}) failed: {reply['error']}")
        return reply

    def close(self) -> None:
        if self.proc.poll() is None:
            try:
                self.proc.stdin.write(json.dumps({"op": "quit"}) + "\n")
                self.proc.stdin.flush()
                self.proc.wait(timeout=30)
            except (BrokenPipeError, subprocess.TimeoutExpired):
                self.proc.kill()
                self.proc.wait()
        self.stderr.close()


def thread_settings(requested: list[int]) -> dict[str, int]:
    """{"t1": 1, "tall": physical cores}: 0 means all physical cores, for every runtime alike."""
    import psutil

    physical = psutil.cpu_count(logical=False) or os.cpu_count() or 1
    logical = os.cpu_count() or physical
    out: dict[str, int] = {}
    for n in requested:
        if n > logical:
            raise EdgekdError(f"bench threads: {n} threads cannot be timed on this machine's {logical} logical cores; "
                              f"use 1..{logical}, or 0 for all physical cores")
        # Every requested setting is measured, even where two mean the same count (tall is 1 thread on a
        # one-core machine): the report may name any of them.
        out["tall" if n == 0 else f"t{n}"] = physical if n == 0 else n
    return out


def run_benchmark(targets: list[Target], inputs: BenchInputs, cfg: BenchConfig, label_names: list[str] | None = None,
                  references: list[str] = ()) -> dict:
    """Measure every target; each row gets paired speed-ups relative to each of ``references`` (row names)."""
    if not targets:
        raise EdgekdError("nothing to benchmark: no model was given")
    threads = thread_settings(cfg.threads)
    workers: list[WorkerProcess] = []
    try:
        for i, target in enumerate(targets, 1):
            log.info("[load %d/%d] %s", i, len(targets), target.name)
            workers.append(WorkerProcess(target, target.inputs or inputs, cfg))
        timed = [w for w in workers if w.target.timed]
        first = {w.target.name: w.send({"op": "first"})["first_s"] for w in timed}
        timings = {w.target.name: {} for w in workers}
        with LoadSampler() as load:
            for tag, count in threads.items():
                for w in timed:
                    w.send({"op": "threads", "n": count})
                    w.send({"op": "warmup", "n": cfg.warmup})
                for r in range(cfg.rounds):
                    start = time.perf_counter()
                    for k in range(len(timed)):
                        w = timed[(k + r) % len(timed)]  # rotate who goes first
                        reply = w.send({"op": "round", "fixed_runs": cfg.fixed_runs, "turn_warmup": cfg.turn_warmup})
                        timings[w.target.name].setdefault(tag, []).append(reply)
                        time.sleep(PAUSE_S)
                    log.info("threads %s (%d), round %d/%d: %d models timed on %d inputs in %.0f s", tag, count, r + 1,
                             cfg.rounds, len(timed), inputs.sample, time.perf_counter() - start)
            tokenize = {w.target.name: w.send({"op": "tokenize"})["tokenize"] for w in timed
                        if w.target.runtime == "bundle"}
        quality = {}
        for w in workers:
            w.send({"op": "threads", "n": max(threads.values())})
            quality[w.target.name] = {"batch1": w.send({"op": "predict", "batch": 1})["pred"],
                                      "batched": w.send({"op": "predict", "batch": cfg.eval_batch_size})["pred"]}
            log.info("predictions of %s done", w.target.name)
        rss = {w.target.name: w.send({"op": "rss"})["peak_rss_mb"] for w in workers}
    finally:
        for w in workers:
            w.close()
    rows, correct = [], {}  # correct: row name -> [rows] bool, batch 1 prediction == label (scored rows only)
    for w in workers:
        name = w.target.name
        own = w.target.inputs or inputs
        with np.load(own.npz) as data:  # the same texts and labels for all; lengths follow each model's tokenizer
            offsets, labels, sample = data["real_offsets"], data["labels"], data["sample"]
            fixed_length = len(data["fixed_ids"])  # the setting is named after the input it really timed
        lengths = np.diff(offsets)[sample]
        row = {**w.target.describe(), "inputs": own.npz.name, "load_s": round(w.load_s, 3),
               **({"first_inference_ms": round(1000 * first[name], 3)} if name in first else {}),
               "peak_rss_mb": rss[name], **_timing_summary(timings[name], lengths, fixed_length, cfg)}
        if name in tokenize:
            row["tokenize_ms"] = latency_stats(tokenize[name])
        row.update(_quality(quality[name], labels, label_names, cfg.eval_batch_size))
        if "accuracy" in row:
            correct[name] = np.asarray(quality[name]["batch1"]) == labels
        rows.append(row)
    for reference in references:
        _add_speedups(rows, reference)
        _add_accuracy_pairs(rows, reference, correct)
    summary = load.summary()
    cores = summary["cores"]
    disturbed = summary["other_processes_cores_mean"] > cfg.max_other_cpu * cores
    result = {"schema": SCHEMA, "config": cfg.model_dump(mode="json"), "machine": machine_info(),
              "versions": library_versions(), "threads": threads,
              "inputs": {"rows": inputs.rows, "sample": inputs.sample, "describe": inputs.describe},
              "load": {**summary, "limit_cores": round(cfg.max_other_cpu * cores, 3), "disturbed": disturbed},
              "references": list(references), "label_names": label_names, "rows": rows}
    if disturbed:
        msg = (f"other processes used {summary['other_processes_cores_mean']:.2f} of {cores} cores on average while "
               f"the benchmark ran (limit {cfg.max_other_cpu:.0%} of the cores): timings are disturbed")
        if cfg.strict:
            raise EdgekdError(msg + "; refused (strict)")
        log.warning(msg)
    return result


def _timing_summary(per_setting: dict[str, list[dict]], lengths: np.ndarray, fixed_length: int,
                    cfg: BenchConfig) -> dict:
    out = {"latency_ms": {}, "rounds_p50_ms": {}, "cv": {}, "by_length": {}, "throughput_eps": {}}
    for tag, rounds in per_setting.items():
        real = np.asarray([r["real"] for r in rounds])  # [rounds, sample]
        key = f"real_b1_{tag}"
        out["latency_ms"][key] = latency_stats(real.ravel())
        out["rounds_p50_ms"][key] = [round(float(np.median(r)) * 1000, 4) for r in real]
        out["cv"][key] = cv(out["rounds_p50_ms"][key])
        out["by_length"][key] = by_length(real, lengths, cfg.length_buckets)
        if "fixed" in rounds[0]:
            fixed_key = f"fixed{fixed_length}_b1_{tag}"
            out["latency_ms"][fixed_key] = latency_stats(np.concatenate([r["fixed"] for r in rounds]))
            out["rounds_p50_ms"][fixed_key] = [round(float(np.median(r["fixed"])) * 1000, 4) for r in rounds]
            out["cv"][fixed_key] = cv(out["rounds_p50_ms"][fixed_key])
        examples = sum(r["throughput_examples"] for r in rounds)
        out["throughput_eps"][f"real_b{cfg.throughput_batch}_{tag}"] = round(
            examples / sum(sum(r["throughput"]) for r in rounds), 2)
    return out


def _quality(pred: dict, labels: np.ndarray, label_names: list[str] | None, batch: int) -> dict:
    out = {"predictions": pred["batch1"]}
    if label_names is None or (labels < 0).any():
        return out
    batched = quality_report(np.asarray(pred["batched"]), labels, label_names)
    return {**out, **quality_report(np.asarray(pred["batch1"]), labels, label_names),
            "batched": {"batch_size": batch, "accuracy": batched["accuracy"], "macro_f1": batched["macro_f1"]}}


def _add_speedups(rows: list[dict], reference: str) -> None:
    ref = next((r for r in rows if r["name"] == reference), None)
    if ref is None:
        raise EdgekdError(f"reference {reference!r} is not one of the benchmarked rows: "
                          f"{', '.join(r['name'] for r in rows)}")
    for row in (r for r in rows if r.get("timed", True)):  # accuracy-only rows have no rounds to pair
        row.setdefault("speedup_vs", {})[reference] = {
            key: paired_speedup(ref["rounds_p50_ms"][key], rounds)
            for key, rounds in row["rounds_p50_ms"].items() if key in ref["rounds_p50_ms"]}


def _add_accuracy_pairs(rows: list[dict], reference: str, correct: dict[str, np.ndarray]) -> None:
    """row["accuracy_vs"][reference]: the row's accuracy minus the reference's on the same test texts, with a
    paired bootstrap interval, the discordant counts (a = this row, b = the reference) and McNemar's p.

    Every row predicted the same texts in the same order (each with its own tokenizer), so position i of
    two correctness vectors is the same text: the pairing is exact, ablation rows included.
    """
    if reference not in correct:  # no labels, or the reference is not a scored row
        return
    for row in rows:
        if row["name"] != reference and row["name"] in correct:
            row.setdefault("accuracy_vs", {})[reference] = paired_accuracy_difference(correct[row["name"]],
                                                                                       correct[reference])


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    import psutil

    t = psutil.cpu_times()
    # Not busy here: idle, waiting on I/O, and time the host gave to other guests (steal). Guest time is
    # already inside user time on Linux, so it is taken out once to avoid counting it twice.
    not_busy = t.idle + sum(getattr(t, f, 0.0) for f in ("iowait", "steal", "guest", "guest_nice"))
    return sum(t) - not_busy


def _steal_seconds() -> float:
    """CPU seconds this virtual machine was ready to run but the host ran another guest (0 where unknown)."""
    import psutil

    return getattr(psutil.cpu_times(), "steal", 0.0)


def _own_cpu_seconds() -> float:
    """CPU seconds of this process, its finished children and its live ones (the benchmark workers)."""
    import psutil

    t = os.times()
    own = t.user + t.system + t.children_user + t.children_system
    for child in psutil.Process().children(recursive=True):
        try:
            c = child.cpu_times()
            own += c.user + c.system
        except psutil.NoSuchProcess:  # ended between listing and reading: counted once reaped
            pass
    return own


class LoadSampler:
    """Samples the 1-minute load average once a second while the benchmark runs, and measures how
    much CPU other processes took meanwhile (machine busy time minus this process and its workers):
    the load average lags and counts the benchmark itself, the second number is the disturbance."""

    def __init__(self, interval: float = 1.0):
        self.samples: list[float] = []
        self.other_cores = 0.0  # set on exit
        self.steal_cores = 0.0  # CPU the hypervisor gave to other machines while ours wanted it (VMs only)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(interval)

    def __enter__(self) -> "LoadSampler":
        self.start = os.getloadavg()
        self._cpu0, self._own0, self._t0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        self._steal0 = _steal_seconds()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = os.getloadavg()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        other = (_busy_cpu_seconds() - self._cpu0) - (_own_cpu_seconds() - self._own0)
        self.other_cores = max(0.0, other / wall)
        self.steal_cores = max(0.0, (_steal_seconds() - self._steal0) / wall)

    def summary(self) -> dict:
        return {"load1_start": round(self.start[0], 2), "load1_end": round(self.end[0], 2),
                "load1_max": round(max(self.samples, default=self.start[0]), 2),
                "load1_mean": round(float(np.mean(self.samples)) if self.samples else self.start[0], 2),
                "other_processes_cores_mean": round(self.other_cores, 3),
                "steal_cores_mean": round(self.steal_cores, 3),
                "cores": os.cpu_count(), "sampled_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
