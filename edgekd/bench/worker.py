"""One benchmarked model in its own process: `python -m edgekd.bench.worker`.

The orchestrator (edgekd.bench.core) starts one worker per model, loads them all, then drives
them in turn, round by round, over the same inputs. A process per model makes peak RSS mean
something (only that model is loaded) and keeps one runtime's thread pools away from the next.
ONNX models and bundles run with numpy + onnxruntime only; torch is imported only for PyTorch (and ExecuTorch,
whose runtime takes torch tensors); edgekd.bench.mobile_runners serves .pte and .tflite files.

Protocol: one JSON command per line on stdin, one JSON reply per line on the original stdout
(library chatter on stdout is sent to stderr, so it cannot corrupt a reply).
  {"op": "load", "target": {...}, "inputs": path, "texts": path|null, "throughput": [batch, batches]}
  {"op": "threads", "n": k}         set intra-op threads (k >= 1)
  {"op": "first"}                    seconds of the first inference after load (one real input)
  {"op": "warmup", "n": w}           w untimed calls over the sample
  {"op": "round", "fixed_runs": f, "turn_warmup": w}
                                     one round: w untimed calls, then the sample batch 1 in order, f fixed-length
                                     calls, the throughput batches; seconds per call
  {"op": "tokenize"}                 (bundles) seconds to tokenise each sample text
  {"op": "predict", "batch": b}      predicted class of every row, batch 1 or length-sorted batches of b
  {"op": "rss"}                      peak resident memory of this process, MB
"""

import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

from edgekd.bench.inputs import load_inputs
from edgekd.ort import feed, length_sorted_batches, make_session, pad_numpy


class OrtRunner:
    takes = "ids"

    def __init__(self, target: dict):
        self.path, self.pad_id, self.session = target["path"], target["pad_id"], None

    def set_threads(self, threads: int) -> None:
        self.session = None  # release the old session first: two alive at once would inflate peak RSS
        self.session = make_session(self.path, threads)

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad_numpy(rows, self.pad_id)
        return self.session.run(None, feed(self.session, ids, mask))[0]

    def sync(self) -> None:
        pass


HALF = {"fp16": "float16", "bf16": "bfloat16"}  # row precision -> torch dtype of a half-precision PyTorch row


class TorchRunner:
    takes = "ids"

    def __init__(self, target: dict):
        import torch

        from edgekd.models.io import load_classifier

        self.torch, self.pad_id, self.device = torch, target["pad_id"], torch.device(target.get("device", "cpu"))
        self.model = load_classifier(target["path"]).to(self.device).eval()
        if target.get("precision") in HALF:  # half-precision weights and activations (a GPU row); logits back in fp32
            self.model = self.model.to(getattr(torch, HALF[target["precision"]]))
        if self.device.type == "cuda":  # _timed times each call with CUDA events instead of the host's clock
            self.timed_call = self._cuda_timed_call

    def set_threads(self, threads: int) -> None:
        self.torch.set_num_threads(threads)

    def __call__(self, rows: list[np.ndarray]) -> np.ndarray:
        ids, mask = pad_numpy(rows, self.pad_id)
        with self.torch.inference_mode():
            out = self.model(input_ids=self.torch.from_numpy(ids).to(self.device),
                             attention_mask=self.torch.from_numpy(mask).to(self.device)).logits
            return out.float().cpu().numpy()

    def sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def _cuda_timed_call(self, rows: list[np.ndarray]) -> float:
        """Seconds of one call between two CUDA events on the current stream: the input copy, the forward and the
        logits' copy back (which waits for the forward), on the GPU's own clock rather than the host's."""
        start, end = (self.torch.cuda.Event(enable_timing=True) for _ in range(2))
        start.record()
        self(rows)
        end.record()
        end.synchronize()
        return start.elapsed_time(end) / 1000  # elapsed_time is in milliseconds


class BundleRunner:
    """The deploy bundle end to end, tokenizer included, through deploy/edgekd_runtime.py."""

    takes = "texts"

    def __init__(self, target: dict):
        sys.path.insert(0, target["runtime_dir"])
        from edgekd_runtime import Bundle

        self.Bundle, self.folder, self.bundle = Bundle, target["path"], None

    def set_threads(self, threads: int) -> None:
        self.bundle = None
        self.bundle = self.Bundle(self.folder, threads=threads)

    def __call__(self, texts: list[str]) -> np.ndarray:
        return self.bundle.logits(texts)

    def tokenize(self, text: str) -> None:
        self.bundle.tokenizer.encode(text)

    def sync(self) -> None:
        pass


RUNNERS = {"onnxruntime": OrtRunner, "pytorch": TorchRunner, "bundle": BundleRunner}


def runner_class(runtime: str) -> type:
    """The runner of a target's runtime; ExecuTorch and LiteRT runners are imported only when asked for."""
    if runtime in ("executorch", "litert"):
        from edgekd.bench.mobile_runners import MOBILE_RUNNERS

        return MOBILE_RUNNERS[runtime]
    return RUNNERS[runtime]


def _timed(runner, inputs: list, warmup: int = 0) -> list[float]:
    """Seconds per call of ``runner(x)`` for each ``x`` in ``inputs``, after ``warmup`` untimed calls."""
    for i in range(warmup):
        runner(inputs[i % len(inputs)])
    runner.sync()
    clock = getattr(runner, "timed_call", None)  # a runner with its own clock (CUDA events on a GPU)
    if clock is not None:
        return [clock(x) for x in inputs]
    times = []
    for x in inputs:
        start = time.perf_counter()
        runner(x)
        runner.sync()
        times.append(time.perf_counter() - start)
    return times


class Worker:
    def __init__(self, cmd: dict):
        start = time.perf_counter()
        self.runner = runner_class(cmd["target"]["runtime"])(cmd["target"])
        self.runner.set_threads(1)  # ONNX Runtime builds its session here: part of loading
        self.load_s = time.perf_counter() - start
        data = load_inputs(cmd["inputs"])
        self.labels, self.sample = data["labels"], data["sample"]
        if self.runner.takes == "texts":
            self.rows = json.loads(Path(cmd["texts"]).read_text())
            self.fixed = None  # a bundle takes text, and a fixed token length is not a text
        else:
            self.rows, self.fixed = data["rows"], data["fixed"]
        batch, count = cmd["throughput"]
        picked = [self.rows[i] for i in self.sample[: batch * count]]
        self.batches = [picked[s : s + batch] for s in range(0, len(picked), batch)]

    def handle(self, cmd: dict) -> dict:
        op, run = cmd["op"], self.runner
        if op == "threads":
            run.set_threads(cmd["n"])
            return {}
        if op == "first":
            return {"first_s": _timed(run, [[self.rows[self.sample[0]]]])[0]}
        if op == "warmup":
            _timed(run, [[self.rows[i]] for i in self.sample[: cmd["n"]]])
            return {}
        if op == "round":
            # A few untimed calls first: the runtime's thread pool slept while the other models had their turn.
            _timed(run, [[self.rows[i]] for i in self.sample[: cmd.get("turn_warmup", 0)]])
            out = {"real": _timed(run, [[self.rows[i]] for i in self.sample])}
            if self.fixed is not None and cmd["fixed_runs"]:
                out["fixed"] = _timed(run, [[self.fixed]] * cmd["fixed_runs"], warmup=1)
            out["throughput"] = _timed(run, self.batches, warmup=1)
            out["throughput_examples"] = sum(len(b) for b in self.batches)
            return out
        if op == "tokenize":
            times = []
            for i in self.sample:
                start = time.perf_counter()
                run.tokenize(self.rows[i])
                times.append(time.perf_counter() - start)
            return {"tokenize": times}
        if op == "predict":
            return {"pred": self.predict(cmd["batch"]).tolist()}
        if op == "rss":
            return {"peak_rss_mb": peak_rss_mb()}
        raise ValueError(f"unknown worker command {op!r}")

    def predict(self, batch: int) -> np.ndarray:
        pred = np.empty(len(self.rows), dtype=np.int64)
        if batch == 1:
            for i, row in enumerate(self.rows):
                pred[i] = int(self.runner([row]).argmax(-1)[0])
            return pred
        # The same length-sorted batches as the quantize stage's accuracy; predictions put back in order.
        for idx in length_sorted_batches([len(r) for r in self.rows], batch):
            pred[idx] = self.runner([self.rows[i] for i in idx]).argmax(-1)
        return pred


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


def main(make_worker=None) -> int:
    """Serve commands until "quit"; ``make_worker(load_cmd)`` builds the worker (default: the classifier's)."""
    make_worker = make_worker or Worker
    replies = os.fdopen(os.dup(1), "w")
    os.dup2(2, 1)  # anything a library prints goes to stderr, not into the replies
    worker = None
    for line in sys.stdin:
        cmd = json.loads(line)
        if cmd["op"] == "quit":
            break
        try:
            if cmd["op"] == "load":
                worker = make_worker(cmd)
                reply = {"load_s": worker.load_s}
            else:
                reply = worker.handle(cmd)
        except Exception as exc:  # reported to the orchestrator, which names the model
            reply = {"error": f"{type(exc).__name__}: {exc}"}
        replies.write(json.dumps(reply) + "\n")
        replies.flush()
    return 0


if __name__ == "__main__":
    sys.exit(main())
