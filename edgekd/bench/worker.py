"""Measure one model in a fresh process: `python -m edgekd.bench.worker JOB.json RESULT.json`.

A fresh process per model makes peak RSS mean something (nothing else is loaded) and keeps one
runtime's thread pools from disturbing the next. ONNX models are run with numpy + onnxruntime only;
torch is imported only for PyTorch models.

The job names the model, the runtime, and an .npz of pre-tokenised inputs shared by every model:
  real_ids / real_offsets   test-split token ids (ragged, concatenated) and row offsets
  labels                    test-split labels
  fixed_ids                 one real-text input of exactly fixed_length tokens
"""

import json
import resource
import sys
import time

import numpy as np

from edgekd.bench.stats import latency_stats
from edgekd.metrics import classification_metrics
from edgekd.ort import feed, length_sorted_batches, make_session, pad_numpy


class OrtRunner:
    def __init__(self, path: str, pad_id: int):
        self.path, self.pad_id = path, pad_id

    def set_threads(self, threads: int) -> None:
        self.session = make_session(self.path, threads)

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad_numpy([r.tolist() for r in rows], self.pad_id)
        return self.session.run(None, feed(self.session, ids, mask))[0]

    def sync(self) -> None:
        pass


class TorchRunner:
    def __init__(self, path: str, pad_id: int, device: str):
        import torch

        from edgekd.models.io import load_classifier

        self.torch, self.pad_id, self.device = torch, pad_id, torch.device(device)
        self.model = load_classifier(path).to(self.device).eval()

    def set_threads(self, threads: int) -> None:
        import os

        self.torch.set_num_threads(threads or os.cpu_count())

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad_numpy([r.tolist() for r in rows], self.pad_id)
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(ids).to(self.device),
                             attention_mask=self.torch.from_numpy(mask).to(self.device)).logits
            return out.float().cpu().numpy()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()


def _timed(runner, make_input, runs: int, warmup: int, min_seconds: float = 0.0) -> list[float]:
    """Seconds per call of ``runner(make_input(i))``: ``runs`` calls at least, more until
    ``min_seconds`` have been measured (capped at 100x ``runs``)."""
    for i in range(warmup):
        runner(make_input(i))
    runner.sync()
    times: list[float] = []
    while len(times) < runs or (sum(times) < min_seconds and len(times) < 100 * runs):
        rows = make_input(len(times))
        start = time.perf_counter()
        runner(rows)
        runner.sync()
        times.append(time.perf_counter() - start)
    return times


def load_inputs(path: str) -> tuple[list[np.ndarray], np.ndarray, np.ndarray]:
    """(real rows, labels, fixed-length row); every real row is a view of one shared array.

    Each ``data[key]`` access on an .npz reads a fresh copy: slicing rows out of a new copy per row
    would keep thousands of copies alive and inflate the peak RSS being measured.
    """
    with np.load(path) as data:
        real_ids, offsets = data["real_ids"], data["real_offsets"]
        return np.split(real_ids, offsets[1:-1]), data["labels"], data["fixed_ids"]


def measure(job: dict) -> dict:
    real, labels, fixed = load_inputs(job["inputs"])
    if job["runtime"] == "onnxruntime":
        runner = OrtRunner(job["path"], job["pad_id"])
    else:
        runner = TorchRunner(job["path"], job["pad_id"], job["device"])
    result = {"latency_ms": {}, "throughput_eps": {}}
    runs, warmup, batch, min_s = job["runs"], job["warmup"], job["throughput_batch"], job.get("min_seconds", 0.0)
    batches = [b for b in (real[i * batch : (i + 1) * batch] for i in range(job["throughput_batches"])) if b]
    for threads in job["threads"]:
        runner.set_threads(threads)
        tag = f"t{threads or 'all'}"
        # batch 1 over the test split's real lengths, in the same order for every model
        result["latency_ms"][f"real_b1_{tag}"] = latency_stats(
            _timed(runner, lambda i: [real[i % len(real)]], runs, warmup, min_s))
        result["latency_ms"][f"fixed{len(fixed)}_b1_{tag}"] = latency_stats(
            _timed(runner, lambda i: [fixed], runs, warmup, min_s))
        times = _timed(runner, lambda i: batches[i % len(batches)], len(batches), 1, min_s)
        examples = sum(len(batches[i % len(batches)]) for i in range(len(times)))
        result["throughput_eps"][f"real_b{batch}_{tag}"] = round(examples / sum(times), 2)
    runner.set_threads(0)
    eval_batch = job["eval_batch_size"]
    # The same length-sorted batches as the quantize stage's accuracy; predictions put back in order.
    pred = np.empty(len(real), dtype=np.int64)
    for idx in length_sorted_batches([len(r) for r in real], eval_batch):
        pred[idx] = runner([real[i] for i in idx]).argmax(-1)
    result.update(classification_metrics(pred, labels, job["num_classes"]))
    result["predictions"] = pred.tolist()
    result["peak_rss_mb"] = peak_rss_mb()
    return result


def peak_rss_mb() -> float:
    """Peak resident memory of this process since it started, in MB.

    Linux's VmHWM belongs to the address space created at exec; ru_maxrss would also count the
    parent's pages inherited through fork (the pipeline process is large), so it is only the fallback.
    """
    try:
        for line in open("/proc/self/status"):
            if line.startswith("VmHWM:"):
                return round(int(line.split()[1]) / 1024, 1)  # kB
    except OSError:
        pass
    scale = 1 if sys.platform == "darwin" else 1024  # bytes on macOS, KiB on Linux
    return round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * scale / 2**20, 1)


def main() -> int:
    job_path, result_path = sys.argv[1], sys.argv[2]
    job = json.loads(open(job_path).read())
    with open(result_path, "w") as f:
        json.dump(measure(job), f)
    return 0


if __name__ == "__main__":
    sys.exit(main())
