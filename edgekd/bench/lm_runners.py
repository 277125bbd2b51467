"""Causal-LM runners: what a benchmark worker process uses to generate from and score one model.

The runner interface (one class per runtime; add a runtime by adding a class and one LM_RUNNERS entry):

  class MyRunner(LMRunner):
      def load(self, target: dict) -> None            # target: the row's fields, "path", "device", "runtime_dir"
      def set_threads(self, n: int) -> None           # intra-op threads (n >= 1); may rebuild the session
      def generate(self, prompt_ids: list[int], new_tokens: int) -> dict
          # batch-1 greedy decoding with the runtime's KV cache, EOS ignored (every model makes new_tokens tokens):
          # {"prefill_s": the one call on the whole prompt, "ttft_s": prefill + choosing the first token,
          #  "decode_s": the new_tokens - 1 one-token steps after it, "new_tokens": tokens made, "ids": [new ids]}
      def score(self, windows: np.ndarray) -> tuple[float, int, np.ndarray | None]   # optional
          # teacher-forced over windows [W, L]: (sum of next-token NLL in nats over W * (L - 1) predictions,
          # correct top-1 predictions, predicted ids [W, L - 1] or None when the runtime cannot give them)

A runner without ``score`` (e.g. ONNX Runtime GenAI's og.Generator, which only streams tokens) gets no quality
columns. Only numpy is imported here; torch is imported by the PyTorch runner alone, so an ONNX row's peak RSS
has no torch in it.
"""

import sys
import time

import numpy as np


class LMRunner:
    """Base class: ``Runner(target)`` loads the model (its time is the row's load_s)."""

    score = None  # a runner that can score windows defines score(windows)

    def __init__(self, target: dict):
        self.target = target
        self.load(target)

    def load(self, target: dict) -> None:
        raise NotImplementedError

    def set_threads(self, n: int) -> None:
        raise NotImplementedError

    def generate(self, prompt_ids: list[int], new_tokens: int) -> dict:
        raise NotImplementedError


def nll_and_predictions(logits: np.ndarray, window: np.ndarray) -> tuple[float, int, np.ndarray]:
    """logits [L, vocab] of one window [L]: (NLL sum of the L - 1 next tokens, correct top-1, predicted ids [L - 1])."""
    z = logits[:-1].astype(np.float64)  # position t predicts token t + 1
    targets = np.asarray(window[1:])
    z = z - z.max(-1, keepdims=True)
    nll = np.log(np.exp(z).sum(-1)) - z[np.arange(len(targets)), targets]
    pred = logits[:-1].argmax(-1)
    return float(nll.sum()), int((pred == targets).sum()), pred


class _NoText:
    """Stands in for a tokenizer: the bench passes token ids, and never needs the text of new tokens."""

    def get_vocab_size(self) -> int:
        return 0

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return ""


def _generator_class(runtime_dir: str):
    """deploy/edgekd_generate.py's Generator: the one onnxruntime decode loop, shared with the deploy side."""
    if runtime_dir not in sys.path:
        sys.path.insert(0, runtime_dir)
    from edgekd_generate import Generator

    return Generator


def _ids_result(generation) -> dict:
    t = generation.timings
    return {"prefill_s": t.prefill_s, "ttft_s": t.ttft_s, "decode_s": t.decode_s, "new_tokens": t.new_tokens,
            "ids": list(generation.ids)}


class OrtLMRunner(LMRunner):
    """A KV-cache ONNX file (optimum text-generation-with-past) on onnxruntime, driven by edgekd_generate's loop."""

    def load(self, target: dict) -> None:
        self.Generator, self.path, self.gen = _generator_class(target["runtime_dir"]), target["path"], None

    def set_threads(self, n: int) -> None:
        import onnxruntime as ort

        self.gen = None  # release the old session first: two alive at once would inflate peak RSS
        gen = self.Generator.__new__(self.Generator)  # a bare ONNX file has no bundle.json: set what __init__ reads
        gen.manifest, gen.tokenizer, gen.last_timings = {}, _NoText(), None
        gen.eos_token_ids, gen.max_context, gen.pad_token_id = set(), 1 << 30, None  # EOS ignored; caller checks length
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = n, 1
        gen.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        gen._discover_io(self.path)
        self.gen = gen

    def generate(self, prompt_ids: list[int], new_tokens: int) -> dict:
        return _ids_result(self.gen.generate(list(prompt_ids), max_new_tokens=new_tokens))

    def _full_logits(self, window: np.ndarray) -> np.ndarray:
        """One teacher-forced pass over a window [L] with an empty cache: logits [L, vocab]."""
        gen, n = self.gen, len(window)
        feed = {"input_ids": np.asarray([window], dtype=gen._types["input_ids"]),
                "attention_mask": np.ones((1, n), dtype=gen._types["attention_mask"]), **gen._empty_past}
        if "position_ids" in gen._types:
            feed["position_ids"] = np.arange(n, dtype=gen._types["position_ids"])[None]
        return gen.session.run(["logits"], feed)[0][0]

    def score(self, windows: np.ndarray) -> tuple[float, int, np.ndarray]:
        nll, correct, preds = 0.0, 0, []
        for w in windows:  # one window at a time: logits [L, vocab] floats (50 MB for SmolLM2 at L = 256)
            a, b, p = nll_and_predictions(self._full_logits(w), w)
            nll, correct = nll + a, correct + b
            preds.append(p)
        return nll, correct, np.stack(preds)


class BundleLMRunner(OrtLMRunner):
    """An edgekd LM bundle (bundle.json + generation.json) through its own Generator; EOS ignored like every row."""

    def load(self, target: dict) -> None:
        self.Generator, self.folder, self.gen = _generator_class(target["runtime_dir"]), target["path"], None

    def set_threads(self, n: int) -> None:
        self.gen = None
        self.gen = self.Generator(self.folder, threads=n)
        self.gen.eos_token_ids, self.gen.max_context = set(), 1 << 30


class TorchLMRunner(LMRunner):
    """A Hugging Face causal LM in PyTorch with its own KV cache; CUDA rows run in bf16 and synchronise per step."""

    def load(self, target: dict) -> None:
        import torch
        from transformers import AutoModelForCausalLM

        self.torch, self.device = torch, torch.device(target.get("device", "cpu"))
        dtype = torch.bfloat16 if self.device.type == "cuda" else torch.float32
        self.model = AutoModelForCausalLM.from_pretrained(target["path"], dtype=dtype).to(self.device).eval()

    def set_threads(self, n: int) -> None:
        self.torch.set_num_threads(n)

    def _sync(self) -> None:
        if self.device.type == "cuda":
            self.torch.cuda.synchronize()

    def generate(self, prompt_ids: list[int], new_tokens: int) -> dict:
        torch = self.torch
        with torch.inference_mode():
            ids = torch.tensor([list(prompt_ids)], dtype=torch.long, device=self.device)  # [1, P]
            self._sync()
            start = time.perf_counter()
            out = self.model(input_ids=ids, use_cache=True)  # logits [1, P, vocab], the cache of P positions
            self._sync()
            prefill_s = time.perf_counter() - start
            token = int(out.logits[0, -1].argmax())  # .item() waits for the device
            ttft_s = time.perf_counter() - start
            new, past = [token], out.past_key_values
            start = time.perf_counter()
            for _ in range(new_tokens - 1):
                step = torch.tensor([[token]], dtype=torch.long, device=self.device)  # [1, 1]
                out = self.model(input_ids=step, past_key_values=past, use_cache=True)
                past, token = out.past_key_values, int(out.logits[0, -1].argmax())
                new.append(token)
            decode_s = time.perf_counter() - start
        return {"prefill_s": prefill_s, "ttft_s": ttft_s, "decode_s": decode_s, "new_tokens": len(new), "ids": new}

    def score(self, windows: np.ndarray) -> tuple[float, int, np.ndarray]:
        torch = self.torch
        nll, correct, preds = 0.0, 0, []
        with torch.inference_mode():
            for w in windows:
                ids = torch.from_numpy(np.asarray(w, dtype=np.int64))[None].to(self.device)  # [1, L]
                logits = self.model(input_ids=ids, use_cache=False).logits[0].float().cpu().numpy()  # [L, vocab]
                a, b, p = nll_and_predictions(logits, w)
                nll, correct = nll + a, correct + b
                preds.append(p)
        return nll, correct, np.stack(preds)


# runtime name -> runner class. A new runtime (e.g. "onnxruntime-genai": og.Model / og.Generator for the peer row)
# is one class above or in its own module, and one entry here.
class GenAILMRunner(LMRunner):
    """ONNX Runtime GenAI (og.Model / og.Generator): the language-model peer row (edgekd.peer.genai)."""

    def load(self, target: dict) -> None:
        from edgekd.peer.genai import GenAIRunner

        self.inner = GenAIRunner(target)

    def set_threads(self, n: int) -> None:
        self.inner.set_threads(n)

    def generate(self, prompt_ids: list[int], new_tokens: int) -> dict:
        out = self.inner.generate(list(map(int, prompt_ids)), new_tokens)
        return {k: out[k] for k in ("prefill_s", "ttft_s", "decode_s", "new_tokens", "ids")}

    def score(self, windows: np.ndarray) -> tuple[float, int, np.ndarray | None]:
        scored = self.inner.score([list(map(int, w)) for w in windows])
        return scored["nll_sum"], scored["correct"], np.asarray(scored["top1"])


LM_RUNNERS: dict[str, type[LMRunner]] = {"onnxruntime": OrtLMRunner, "pytorch": TorchLMRunner,
                                         "bundle": BundleLMRunner, "onnxruntime-genai": GenAILMRunner}
