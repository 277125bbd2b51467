"""The peer path for causal LMs: ONNX Runtime GenAI's model builder (int4, CPU) and its generator.

This is what a user without edgekd would ship for a small decoder LM: ``python -m
onnxruntime_genai.models.builder -i HF_DIR -o OUT -p int4 -e cpu`` gives a folder (model.onnx +
model.onnx.data + genai_config.json + tokenizer files) that ``og.Model`` runs with its own KV cache.
The builder runs in a child process through edgekd.peer.genai_shim, which patches only what the
installed transformers needs (see there). ``GenAIRunner`` times greedy generation the way the edgekd
generator (deploy/edgekd_generate.py) is timed, and scores teacher-forced windows from the logits.

Token ids go in and come out: og.Tokenizer returned id -1 for space-prefixed tokens of SmolLM2's
tokenizer, so callers encode with the Hugging Face tokenizer.
"""

import importlib.util
import json
import logging
import math
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from edgekd.artifacts import atomic_write_json
from edgekd.errors import AssetError, ConfigError, EdgekdError

log = logging.getLogger(__name__)

GENAI_PACKAGE = "onnxruntime-genai"
INSTALL_HINT = f"pip install {GENAI_PACKAGE}==0.18.0 (it needs onnxruntime>=1.31)"
CPU_PRECISIONS = ("int4", "int8", "fp32")  # what the builder accepts for -e cpu
CONFIG_FILE = "genai_config.json"
_SHIM_PREFIX = "edgekd.peer.genai_shim: "  # the shim's log lines: which workarounds were applied
# The CPU GroupQueryAttention kernel the builder emits refuses other head sizes when it first runs.
HEAD_SIZE_MULTIPLE = 16


def require_genai(needed_by: str = "the GenAI peer", or_else: str = "remove the GenAI peer") -> None:
    """A one-line error before any work when onnxruntime-genai is not installed, naming what needs it."""
    if importlib.util.find_spec("onnxruntime_genai") is None:
        raise EdgekdError(f"{needed_by} needs {GENAI_PACKAGE} (module onnxruntime_genai not importable): "
                          f"{INSTALL_HINT}, or {or_else}")


def _check_hf_dir(hf_dir: Path) -> None:
    path = hf_dir / "config.json"
    if not path.is_file():
        raise AssetError(f"{path}: not found; build_genai_model needs a Hugging Face model folder")
    config = json.loads(path.read_text(encoding="utf-8"))
    heads = config.get("num_attention_heads") or 1
    head = config.get("head_dim") or config.get("hidden_size", 0) // heads
    if head % HEAD_SIZE_MULTIPLE:
        raise ConfigError(f"{path}: head_dim {head} (hidden_size / num_attention_heads); ONNX Runtime's CPU "
                          f"GroupQueryAttention needs a multiple of {HEAD_SIZE_MULTIPLE}")


def _last_error_line(text: str) -> str:
    """The builder's exception line (the last line naming an Error), else its last non-empty line."""
    lines = [line.strip() for line in text.splitlines() if line.strip()]
    errors = [line for line in lines if "Error" in line.split(":")[0] or line.startswith("Exception")]
    return (errors or lines or ["no output"])[-1][:500]


def genai_config_facts(out_dir: Path) -> dict:
    """What the runtime will use from genai_config.json: EOS ids (a list), context length, sizes, threads."""
    path = Path(out_dir) / CONFIG_FILE
    if not path.is_file():
        raise AssetError(f"{path}: not found; expected an onnxruntime-genai model builder output folder")
    model = json.loads(path.read_text(encoding="utf-8"))["model"]
    decoder = model["decoder"]
    eos = model.get("eos_token_id")
    options = decoder.get("session_options", {})
    return {"eos_token_ids": eos if isinstance(eos, list) else [eos], "pad_token_id": model.get("pad_token_id"),
            "context_length": model["context_length"], "vocab_size": model.get("vocab_size"),
            "model_type": model.get("type"), "num_hidden_layers": decoder.get("num_hidden_layers"),
            "head_size": decoder.get("head_size"), "intra_op_num_threads": options.get("intra_op_num_threads"),
            "inter_op_num_threads": options.get("inter_op_num_threads")}


def set_genai_threads(out_dir: Path, n: int) -> None:
    """Pin the decoder session to ``n`` intra-op threads (inter-op 1: the graph runs sequentially) in
    genai_config.json, where og.Model reads them; without them ONNX Runtime takes every core."""
    if not isinstance(n, int) or n < 1:
        raise ConfigError(f"threads: {n!r}; allowed: an integer >= 1")
    path = Path(out_dir) / CONFIG_FILE
    genai_config_facts(out_dir)  # one-line error if the file is missing
    config = json.loads(path.read_text(encoding="utf-8"))
    options = config["model"]["decoder"].setdefault("session_options", {})
    options.update(intra_op_num_threads=n, inter_op_num_threads=1)
    atomic_write_json(path, config)


def build_genai_model(hf_dir: Path, out_dir: Path, precision: str = "int4", cache_dir: Path | None = None,
                      timeout_s: float | None = None) -> dict:
    """Run the model builder (CPU target) on ``hf_dir`` into ``out_dir``; the builder's output goes to
    ``out_dir``/builder.log. Returns the folder's files and sizes, the build seconds, the workarounds
    applied and the genai_config facts (EOS ids, context length...)."""
    require_genai()
    hf_dir, out_dir = Path(hf_dir), Path(out_dir)
    if precision not in CPU_PRECISIONS:
        raise ConfigError(f"precision: {precision!r}; allowed for the CPU builder: {', '.join(CPU_PRECISIONS)}")
    _check_hf_dir(hf_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # The child imports edgekd.peer.genai_shim from this checkout even when edgekd is not installed.
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(
        [str(Path(__file__).resolve().parents[2]), *filter(None, [os.environ.get("PYTHONPATH")])])}
    with tempfile.TemporaryDirectory(prefix="edgekd-genai-cache-") as tmp:
        cmd = [sys.executable, "-m", "edgekd.peer.genai_shim", "-i", str(hf_dir), "-o", str(out_dir),
               "-p", precision, "-e", "cpu", "-c", str(cache_dir or tmp)]
        start = time.perf_counter()
        try:
            proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout_s)
        except subprocess.TimeoutExpired as exc:
            raise AssetError(f"onnxruntime-genai builder on {hf_dir}: no result after {timeout_s} s") from exc
        seconds = time.perf_counter() - start
    output = proc.stdout + proc.stderr
    (out_dir / "builder.log").write_text(output, encoding="utf-8")
    if proc.returncode != 0 or not (out_dir / CONFIG_FILE).is_file():
        raise AssetError(f"onnxruntime-genai builder failed on {hf_dir} (exit {proc.returncode}): "
                         f"{_last_error_line(proc.stderr or proc.stdout)} (log: {out_dir / 'builder.log'})")
    files = {p.name: p.stat().st_size for p in sorted(out_dir.iterdir()) if p.is_file() and p.name != "builder.log"}
    workarounds = [line.removeprefix(_SHIM_PREFIX) for line in output.splitlines() if line.startswith(_SHIM_PREFIX)]
    result = {"path": str(out_dir), "precision": precision, "execution_provider": "cpu",
              "seconds": round(seconds, 2), "file_bytes": sum(files.values()), "files": files,
              "workarounds": workarounds, **genai_config_facts(out_dir)}
    log.info("GenAI %s build of %s: %.1f MB in %.1f s%s", precision, hf_dir.name, result["file_bytes"] / 1e6,
             seconds, f" (workarounds: {'; '.join(workarounds)})" if workarounds else "")
    return result


class GenAIRunner:
    """A GenAI builder folder run by og.Model: greedy generation timed per phase, teacher-forced scores."""

    takes = "ids"

    def __init__(self, target: dict):
        require_genai()
        import onnxruntime_genai as og

        self.og, self.path, self.model = og, Path(target["path"]), None
        self.facts = genai_config_facts(self.path)

    @classmethod
    def load(cls, target: dict, threads: int = 1) -> "GenAIRunner":
        runner = cls(target)
        runner.set_threads(threads)
        return runner

    def set_threads(self, n: int) -> None:
        """Reload the og.Model with ``n`` intra-op threads, overlaid on the folder's config (the artifact
        on disk is left as built; set_genai_threads writes the setting into the folder for shipping)."""
        if not isinstance(n, int) or n < 1:
            raise ConfigError(f"threads: {n!r}; allowed: an integer >= 1")
        self.model = None  # release the old session first: two alive at once would inflate peak RSS
        config = self.og.Config(str(self.path))
        config.overlay(json.dumps({"model": {"decoder": {"session_options": {
            "intra_op_num_threads": n, "inter_op_num_threads": 1}}}}))
        self.model = self.og.Model(config)

    def _generator(self, total: int, min_total: int = 0):
        params = self.og.GeneratorParams(self.model)
        # min_length masks every EOS id until ``total`` tokens exist: each model then decodes the same count.
        params.set_search_options(do_sample=False, max_length=total, min_length=min_total)
        return self.og.Generator(self.model, params)

    def _check_length(self, n: int, what: str) -> None:
        if n > self.facts["context_length"]:
            raise ConfigError(f"{what}: {n} tokens; allowed: at most the model's context_length "
                              f"{self.facts['context_length']} ({self.path / CONFIG_FILE})")

    def generate(self, prompt_ids: list[int], new_tokens: int) -> dict:
        """Greedy ``new_tokens`` tokens after ``prompt_ids``, EOS ignored.

        prefill_s: append_tokens(prompt) (GenAI runs the model over the prompt there);
        ttft_s: prefill + the first generate_next_token (choosing token 1, the brief's "prefill");
        decode_s: the other new_tokens - 1 generate_next_token calls (one model step + choice each).
        """
        if not prompt_ids or new_tokens < 1:
            raise ConfigError(f"generate: prompt of {len(prompt_ids)} ids, new_tokens {new_tokens}; "
                              "allowed: a non-empty prompt and new_tokens >= 1")
        total = len(prompt_ids) + new_tokens
        self._check_length(total, "prompt + new_tokens")
        generator = self._generator(total, min_total=total)
        start = time.perf_counter()
        generator.append_tokens(np.asarray(prompt_ids, dtype=np.int32))
        prefilled = time.perf_counter()
        generator.generate_next_token()
        first = time.perf_counter()
        ids = [int(generator.get_next_tokens()[0])]
        while len(ids) < new_tokens and not generator.is_done():
            generator.generate_next_token()
            ids.append(int(generator.get_next_tokens()[0]))
        end = time.perf_counter()
        if len(ids) != new_tokens:  # min_length should make this impossible; a silent short run skews tok/s
            raise RuntimeError(f"GenAI stopped after {len(ids)} of {new_tokens} tokens despite min_length")
        decode_s = end - first
        return {"prefill_s": prefilled - start, "ttft_s": first - start, "decode_s": decode_s,
                "new_tokens": new_tokens, "prompt_tokens": len(prompt_ids), "ids": ids,
                "decode_tokens_per_s": (new_tokens - 1) / decode_s if new_tokens > 1 and decode_s > 0 else 0.0}

    def score(self, windows: list[list[int]]) -> dict:
        """Teacher-forced next-token scores: each window runs once (append_tokens) and its logits
        [1, len, vocab] come back through get_output("logits"). Returns the NLL sum over the predicted
        tokens (len - 1 per window), their count, how many the top-1 got right, and the top-1 ids."""
        nll, count, correct, top1 = 0.0, 0, 0, []
        for i, window in enumerate(windows):
            if len(window) < 2:
                raise ConfigError(f"score: window {i} has {len(window)} tokens; allowed: at least 2")
            self._check_length(len(window), f"score window {i}")
            generator = self._generator(len(window))
            generator.append_tokens(np.asarray(window, dtype=np.int32))
            logits = np.asarray(generator.get_output("logits"), dtype=np.float64)[0, :-1]  # [len - 1, vocab]
            targets = np.asarray(window[1:])
            shifted = logits - logits.max(-1, keepdims=True)
            log_probs = shifted - np.log(np.exp(shifted).sum(-1, keepdims=True))
            nll -= float(log_probs[np.arange(len(targets)), targets].sum())
            predicted = logits.argmax(-1)
            correct += int((predicted == targets).sum())
            count += len(targets)
            top1.append(predicted.tolist())
        return {"nll_sum": nll, "tokens": count, "correct": correct, "top1": top1}

    def sync(self) -> None:
        pass

    def close(self) -> None:
        self.model = None


def genai_validation_scores(folder: Path, windows: list[list[int]], threads: int = 1) -> dict:
    """Teacher-forced scores of a GenAI builder folder on token windows (lists of ids, each >= 2 long):
    {perplexity, next_token_accuracy, windows}, the validation block of the peer and of the GenAI bundle."""
    runner = GenAIRunner.load({"path": str(folder)}, threads=threads)
    try:
        scored = runner.score(windows)
    finally:
        runner.close()
    if not scored["tokens"]:
        raise ConfigError(f"{folder}: no windows to score; allowed: at least one window of >= 2 tokens")
    return {"perplexity": round(math.exp(scored["nll_sum"] / scored["tokens"]), 4),
            "next_token_accuracy": round(scored["correct"] / scored["tokens"], 6), "windows": len(windows)}
