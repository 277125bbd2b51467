"""benchmark(): time one model file in a fresh process on inputs shared by every model compared."""

import json
import logging
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

from edgekd.bench.config import BenchConfig
from edgekd.errors import EdgekdError

log = logging.getLogger(__name__)


def prepare_inputs(tokenizer_json: Path, texts: list[str], labels: list[int], max_length: int, fixed_length: int,
                   out: Path) -> int:
    """Tokenise the test split once into ``out`` (.npz, see worker.py); returns the pad id."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length)
    rows = [e.ids for e in tok.encode_batch(texts)]
    # One input of exactly fixed_length tokens, made of real test text (not repeated padding).
    tok.enable_truncation(fixed_length)
    fixed, joined = [], ""
    for text in texts:
        joined += " " + text
        fixed = tok.encode(joined).ids
        if len(fixed) >= fixed_length:
            break
    offsets = np.cumsum([0] + [len(r) for r in rows])
    np.savez(out, real_ids=np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), real_offsets=offsets,
             labels=np.asarray(labels, dtype=np.int64), fixed_ids=np.asarray(fixed, dtype=np.int64))
    pad = tok.token_to_id("[PAD]")
    if pad is None:
        pad = tok.token_to_id("<pad>")
    return 0 if pad is None else pad


def benchmark(path: Path, runtime: str, cfg: BenchConfig, inputs: Path, pad_id: int, num_classes: int,
              device: str = "cpu") -> dict:
    """Measure ``path`` (an ONNX file or a model folder) with ``runtime`` in a fresh Python process."""
    job = {"path": str(path), "runtime": runtime, "device": device, "inputs": str(inputs), "pad_id": pad_id,
           "num_classes": num_classes, "threads": cfg.threads, "warmup": cfg.warmup, "runs": cfg.runs,
           "min_seconds": cfg.min_seconds,
           "throughput_batch": cfg.throughput_batch, "throughput_batches": cfg.throughput_batches,
           "eval_batch_size": cfg.eval_batch_size}
    with tempfile.TemporaryDirectory(prefix="edgekd-bench-") as tmp:
        job_path, result_path = Path(tmp) / "job.json", Path(tmp) / "result.json"
        job_path.write_text(json.dumps(job))
        proc = subprocess.run([sys.executable, "-m", "edgekd.bench.worker", str(job_path), str(result_path)],
                              capture_output=True, text=True, env={**os.environ, "TOKENIZERS_PARALLELISM": "false"})
        if proc.returncode != 0 or not result_path.is_file():
            tail = "\n".join((proc.stderr or "").strip().splitlines()[-5:])
            raise EdgekdError(f"benchmark of {path} with {runtime} failed (exit {proc.returncode}): {tail}")
        return json.loads(result_path.read_text())


def _busy_cpu_seconds() -> float:
    """CPU seconds the whole machine has spent busy since boot (all cores)."""
    import psutil

    t = psutil.cpu_times()
    return sum(t) - t.idle - getattr(t, "iowait", 0.0)


def _own_cpu_seconds() -> float:
    """CPU seconds of this process and its finished children (the benchmark workers)."""
    t = os.times()
    return t.user + t.system + t.children_user + t.children_system


class LoadSampler:
    """Samples the 1-minute load average once a second while the benchmark runs, and measures how
    much CPU other processes took meanwhile (machine busy time minus this process and its workers):
    the load average lags and counts the benchmark itself, the second number is the disturbance."""

    def __init__(self, interval: float = 1.0):
        self.samples: list[float] = []
        self.other_cores = 0.0  # set on exit
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, args=(interval,), daemon=True)

    def _run(self, interval: float) -> None:
        while not self._stop.is_set():
            self.samples.append(os.getloadavg()[0])
            self._stop.wait(interval)

    def __enter__(self) -> "LoadSampler":
        self.start = os.getloadavg()
        self._cpu0, self._own0, self._t0 = _busy_cpu_seconds(), _own_cpu_seconds(), time.perf_counter()
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()
        self.end = os.getloadavg()
        wall = max(time.perf_counter() - self._t0, 1e-9)
        other = (_busy_cpu_seconds() - self._cpu0) - (_own_cpu_seconds() - self._own0)
        self.other_cores = max(0.0, other / wall)

    def summary(self) -> dict:
        return {"load1_start": round(self.start[0], 2), "load1_end": round(self.end[0], 2),
                "load1_max": round(max(self.samples, default=self.start[0]), 2),
                "load1_mean": round(float(np.mean(self.samples)) if self.samples else self.start[0], 2),
                "other_processes_cores_mean": round(self.other_cores, 3),
                "cores": os.cpu_count(), "sampled_at": time.strftime("%Y-%m-%dT%H:%M:%S")}
