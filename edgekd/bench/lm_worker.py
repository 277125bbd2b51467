"""One benchmarked causal LM in its own process: `python -m edgekd.bench.lm_worker`.

The same protocol and process-per-model design as edgekd.bench.worker (one JSON command per line on stdin,
one JSON reply per line), with the LM workload:
  {"op": "load", "target": {...}, "inputs": path, "new_tokens": n}
  {"op": "threads", "n": k}       intra-op threads (k >= 1)
  {"op": "first"}                 seconds to the first token of the first generation after load
  {"op": "warmup", "n": w}        w untimed generations over the prompts
  {"op": "round", "turn_warmup": w, "ids": bool}
                                  w untimed generations, then every prompt once: per prompt prefill_s, ttft_s,
                                  decode_s, new_tokens (and the generated ids when "ids" is true)
  {"op": "rss"}                   peak resident memory so far, MB (asked before "score", whose logits would count)
  {"op": "score"}                 teacher-forced NLL sum, correct top-1, tokens and predicted ids on the eval windows
"""

import sys
import time

import numpy as np

from edgekd.bench.lm_runners import LM_RUNNERS
from edgekd.bench.worker import main, peak_rss_mb


class LMWorker:
    def __init__(self, cmd: dict):
        target = cmd["target"]
        if target["runtime"] not in LM_RUNNERS:
            raise ValueError(f"no LM runner for runtime {target['runtime']!r}; known: {', '.join(LM_RUNNERS)}")
        start = time.perf_counter()
        self.runner = LM_RUNNERS[target["runtime"]](target)
        self.runner.set_threads(1)  # ONNX Runtime builds its session here: part of loading
        self.load_s = time.perf_counter() - start
        with np.load(cmd["inputs"]) as data:
            self.prompts = [row.tolist() for row in data["prompts"]]  # [P, prompt_tokens]
            self.windows = data["windows"]  # [W, L]
        self.new_tokens = cmd["new_tokens"]

    def _untimed(self, n: int) -> None:
        for i in range(n):
            self.runner.generate(self.prompts[i % len(self.prompts)], self.new_tokens)

    def handle(self, cmd: dict) -> dict:
        op, run = cmd["op"], self.runner
        if op == "threads":
            run.set_threads(cmd["n"])
            return {}
        if op == "first":
            return {"first_s": run.generate(self.prompts[0], self.new_tokens)["ttft_s"]}
        if op == "warmup":
            self._untimed(cmd["n"])
            return {}
        if op == "round":
            # Untimed generations first: the runtime's thread pool slept while the other models had their turn.
            self._untimed(cmd.get("turn_warmup", 0))
            out = {"prefill": [], "ttft": [], "decode": [], "new_tokens": [], "ids": []}
            for prompt in self.prompts:
                r = run.generate(prompt, self.new_tokens)
                for key in ("prefill", "ttft", "decode"):
                    out[key].append(r[f"{key}_s"])
                out["new_tokens"].append(r["new_tokens"])
                out["ids"].append([int(i) for i in r["ids"]])
            if not cmd.get("ids"):
                del out["ids"]
            return out
        if op == "rss":
            return {"peak_rss_mb": peak_rss_mb()}
        if op == "score":
            if run.score is None:
                return {"scored": False}
            nll, correct, pred = run.score(self.windows)
            return {"scored": True, "nll_sum": nll, "correct": correct,
                    "tokens": int(self.windows.shape[0] * (self.windows.shape[1] - 1)),
                    "predicted": None if pred is None else np.asarray(pred).tolist()}
        raise ValueError(f"unknown LM worker command {op!r}")


if __name__ == "__main__":
    sys.exit(main(LMWorker))
