"""Generate text with an exported causal LM using onnxruntime, tokenizers and numpy only (no torch, no transformers).

A language-model bundle is a folder:
  model.onnx       decoder exported with a KV cache (optimum task "text-generation-with-past"): inputs input_ids [b, s],
                   attention_mask [b, past+s], position_ids [b, s] (if the graph has it), past_key_values.{i}.key/value
                   [b, kv_heads, past, head_dim]; outputs logits [b, s, vocab] and present.{i}.key/value
  tokenizer.json   the Hugging Face fast-tokenizer file (its post-processor adds BOS if the model wants one)
  generation.json  {"eos_token_ids": [..], "pad_token_id": int | null, "max_context": int}; max_context is the model's
                   position table, write it with generation_settings(hf_model_dir)
  bundle.json      manifest: may rename the three files above ("model", "tokenizer", "generation") and may record
                   model_sha256 (checked on load)

Copy this one file next to your application:

  from edgekd_generate import Generator
  lm = Generator("path/to/bundle")
  lm.generate("The match ended", max_new_tokens=20).text
  for token in lm.stream("The match ended", max_new_tokens=20, do_sample=True, top_p=0.9, seed=0):
      print(token.text, end="", flush=True)
  lm.last_timings.decode_tokens_per_s

or from a shell:  python edgekd_generate.py path/to/bundle "The match ended" --max-new-tokens 20
"""

import argparse
import hashlib
import json
import logging
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort
from tokenizers import Tokenizer

log = logging.getLogger("edgekd_generate")
_DEFAULT_FILES = {"model": "model.onnx", "tokenizer": "tokenizer.json", "generation": "generation.json"}
_NUMPY_TYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(double)": np.float64,
                "tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(bool)": np.bool_}


class BundleError(Exception):
    """A bundle whose files do not match its manifest or are not what a KV-cache decoder needs."""


class GenerateError(ValueError):
    """A request the bundle cannot serve: a prompt longer than the context, bad sampling settings."""


@dataclass(frozen=True)
class Token:
    id: int
    text: str  # the text this token adds (empty while a multi-byte character is incomplete, and for EOS)


@dataclass(frozen=True)
class Timings:
    """Compute time only (model runs + token choice); time spent by the caller between streamed tokens is excluded."""
    prompt_tokens: int
    new_tokens: int
    stop_reason: str  # "eos" | "max_new_tokens" | "context" | "closed" (the caller stopped the stream)
    prefill_s: float  # the one model run over the whole prompt (tokenisation excluded)
    ttft_s: float  # tokenisation + prefill + choosing the first token
    decode_s: float  # the one-token steps after the first token
    decode_tokens_per_s: float  # (new_tokens - 1) / decode_s; 0.0 when fewer than two tokens were made


@dataclass(frozen=True)
class Generation:
    ids: list[int]  # new tokens only, EOS included when it stopped the generation
    text: str  # ids decoded without special tokens
    timings: Timings


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _read_json(path: Path) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise BundleError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(data, dict):
        raise BundleError(f"{path}: expected a JSON object")
    return data


def generation_settings(model_dir: str | Path) -> dict:
    """generation.json content from a Hugging Face model folder's config.json (+ generation_config.json), torch-free."""
    model_dir = Path(model_dir)
    config = _read_json(model_dir / "config.json")
    gen_path = model_dir / "generation_config.json"
    gen = _read_json(gen_path) if gen_path.is_file() else {}
    eos = gen.get("eos_token_id", config.get("eos_token_id"))  # generate() reads generation_config first
    eos = [] if eos is None else [eos] if isinstance(eos, int) else list(eos)
    context = next((config[k] for k in ("max_position_embeddings", "n_positions") if isinstance(config.get(k), int)),
                   None)
    if context is None:
        raise BundleError(f"{model_dir / 'config.json'}: no max_position_embeddings or n_positions (context length)")
    return {"eos_token_ids": eos, "pad_token_id": gen.get("pad_token_id", config.get("pad_token_id")),
            "max_context": context}


class Generator:
    """One bundle loaded for batch-1 generation; `threads` is onnxruntime's intra-op thread count (0 = all cores)."""

    def __init__(self, folder: str | Path, threads: int = 1):
        folder = Path(folder)
        manifest_path = folder / "bundle.json"
        if not manifest_path.is_file():
            raise FileNotFoundError(f"{folder} is not an edgekd LM bundle (no bundle.json)")
        self.manifest = _read_json(manifest_path)
        paths = {key: folder / self.manifest.get(key, name) for key, name in _DEFAULT_FILES.items()}
        for key, path in paths.items():
            if not path.is_file():
                raise FileNotFoundError(f"{path}: missing; bundle.json names it as the bundle's {key} file")
        expected = self.manifest.get("model_sha256")
        if expected is not None and (actual := _sha256(paths["model"])) != expected:
            raise BundleError(f"{paths['model']}: sha256 {actual} differs from model_sha256 {expected} in "
                              f"{manifest_path}; the model file was changed or corrupted")
        self._read_generation(paths["generation"])
        try:
            self.tokenizer = Tokenizer.from_file(str(paths["tokenizer"]))
        except Exception as exc:  # the tokenizers library raises a bare Exception for a malformed file
            raise BundleError(f"{paths['tokenizer']}: not a readable tokenizer.json ({exc})") from None
        self.tokenizer.no_padding()
        self.tokenizer.no_truncation()  # a prompt that is too long is an error, never silently cut
        options = ort.SessionOptions()
        options.intra_op_num_threads, options.inter_op_num_threads = threads, 1
        self.session = ort.InferenceSession(str(paths["model"]), sess_options=options,
                                            providers=["CPUExecutionProvider"])
        self._discover_io(paths["model"])
        self.last_timings: Timings | None = None

    def _read_generation(self, path: Path) -> None:
        gen = _read_json(path)
        eos, context, pad = gen.get("eos_token_ids"), gen.get("max_context"), gen.get("pad_token_id")
        if not isinstance(eos, list) or not all(isinstance(i, int) and i >= 0 for i in eos):
            raise BundleError(f"{path}: eos_token_ids must be a list of token ids (non-negative ints), got {eos!r}")
        if not isinstance(context, int) or context < 2:
            raise BundleError(f"{path}: max_context must be an int >= 2 (the model's position table), got {context!r}")
        if pad is not None and not isinstance(pad, int):
            raise BundleError(f"{path}: pad_token_id must be an int or null, got {pad!r}")
        self.eos_token_ids, self.max_context, self.pad_token_id = set(eos), context, pad

    def _discover_io(self, model_path: Path) -> None:
        """Read names, dtypes and the KV shape [b, kv_heads, past, head_dim] from the graph (any layer count)."""
        inputs = {i.name: i for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        known = {"input_ids", "attention_mask", "position_ids"}
        self.past_names = [n for n in inputs if n.startswith("past_key_values.")]
        unknown = sorted(set(inputs) - known - set(self.past_names))
        if "input_ids" not in inputs or "attention_mask" not in inputs or unknown or "logits" not in outputs:
            raise BundleError(f"{model_path}: not a KV-cache decoder (needs inputs input_ids, attention_mask, "
                              f"past_key_values.*, output logits; unexpected inputs: {unknown or 'none'})")
        if not self.past_names:
            raise BundleError(f"{model_path}: no past_key_values.* inputs; export with task text-generation-with-past")
        self.present_names = ["present." + n[len("past_key_values."):] for n in self.past_names]
        if missing := [n for n in self.present_names if n not in outputs]:
            raise BundleError(f"{model_path}: outputs {missing} missing; each past_key_values.* needs a present.*")
        self._types = {n: _NUMPY_TYPES.get(i.type) for n, i in inputs.items()}
        if bad := [f"{n} ({inputs[n].type})" for n, t in self._types.items() if t is None]:
            raise BundleError(f"{model_path}: input types numpy cannot hold: {', '.join(bad)}")
        self._empty_past = {}
        for name in self.past_names:
            shape = inputs[name].shape  # [batch, kv_heads, past, head_dim]; kv_heads and head_dim are fixed numbers
            if len(shape) != 4 or not isinstance(shape[1], int) or not isinstance(shape[3], int):
                raise BundleError(f"{model_path}: {name} has shape {shape}; expected [batch, kv_heads, past, head_dim]")
            self._empty_past[name] = np.zeros((1, shape[1], 0, shape[3]), dtype=self._types[name])
        self.num_layers = len(self.past_names) // 2
        # logits [b, s, vocab]: vocab may exceed the tokenizer's size (padded embeddings), never fall short of it
        self.vocab_size = next(o.shape[-1] for o in self.session.get_outputs() if o.name == "logits")
        if isinstance(self.vocab_size, int) and self.tokenizer.get_vocab_size() > self.vocab_size:
            raise BundleError(f"{model_path}: {self.vocab_size} logits but the tokenizer has "
                              f"{self.tokenizer.get_vocab_size()} tokens; the bundle mixes two models")

    def encode(self, prompt: str | list[int]) -> list[int]:
        """Token ids of a text (special tokens added as tokenizer.json says) or a list of ids, checked to fit."""
        ids = self.tokenizer.encode(prompt).ids if isinstance(prompt, str) else [int(i) for i in prompt]
        if not ids:
            raise GenerateError("the prompt is empty after tokenisation; give at least one token")
        if isinstance(self.vocab_size, int) and not all(0 <= i < self.vocab_size for i in ids):
            raise GenerateError(f"prompt token ids must lie in [0, {self.vocab_size}) (the model's vocabulary)")
        if len(ids) >= self.max_context:
            raise GenerateError(f"the prompt has {len(ids)} tokens but the model's context is {self.max_context} "
                                f"(max_context in generation.json); shorten it to at most {self.max_context - 1}")
        return ids

    def _run(self, ids: list[int], past: dict, past_len: int) -> tuple[np.ndarray, dict]:
        """One model call on `ids` at positions past_len..past_len+s-1: last-position logits [vocab] and the new KV."""
        s = len(ids)
        feed = {"input_ids": np.array([ids], dtype=self._types["input_ids"]),
                "attention_mask": np.ones((1, past_len + s), dtype=self._types["attention_mask"]), **past}
        if "position_ids" in self._types:
            feed["position_ids"] = np.arange(past_len, past_len + s, dtype=self._types["position_ids"])[None]
        logits, *presents = self.session.run(["logits", *self.present_names], feed)
        return logits[0, -1].astype(np.float64), dict(zip(self.past_names, presents))

    @staticmethod
    def _choose(logits: np.ndarray, rng: np.random.Generator | None, temperature: float, top_k: int,
                top_p: float) -> int:
        """Greedy argmax, or a sample after temperature, then top-k, then top-p (transformers' order)."""
        if rng is None:
            return int(np.argmax(logits))
        logits = logits / temperature
        if 0 < top_k < logits.size:
            logits[logits < np.partition(logits, -top_k)[-top_k]] = -np.inf
        probs = np.exp(logits - logits.max())
        probs /= probs.sum()
        if top_p < 1.0:
            order = np.argsort(-probs, kind="stable")
            # keep the smallest head of the ranking whose mass reaches top_p (always at least the top token)
            cut = int(np.searchsorted(np.cumsum(probs[order]), top_p)) + 1
            kept = np.zeros_like(probs)
            kept[order[:cut]] = probs[order[:cut]]
            probs = kept / kept.sum()
        return int(rng.choice(probs.size, p=probs))

    def stream(self, prompt: str | list[int], max_new_tokens: int = 32, do_sample: bool = False,
               temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0,
               seed: int | None = None) -> Iterator[Token]:
        """Yield new tokens as they are made: one prefill call, then one call per token with the KV cache.

        Arguments and the prompt's length are checked here, before the first token is asked for."""
        if not isinstance(max_new_tokens, int) or max_new_tokens < 1:
            raise GenerateError(f"max_new_tokens must be an int >= 1, got {max_new_tokens!r}")
        if do_sample and not (temperature > 0 and isinstance(top_k, int) and top_k >= 0 and 0 < top_p <= 1):
            raise GenerateError(f"sampling needs temperature > 0, top_k >= 0 (0 = off), 0 < top_p <= 1; got "
                                f"temperature={temperature}, top_k={top_k}, top_p={top_p}")
        start = time.perf_counter()
        ids = self.encode(prompt)
        rng = np.random.default_rng(seed) if do_sample else None
        return self._steps(ids, max_new_tokens, (rng, temperature, top_k, top_p), time.perf_counter() - start)

    def _steps(self, ids: list[int], max_new_tokens: int, sampling: tuple, encode_s: float) -> Iterator[Token]:
        budget = min(max_new_tokens, self.max_context - len(ids))  # prompt + new tokens never exceed the context
        new: list[int] = []
        text, reason, prefill_s, ttft_s, decode_s = "", "closed", 0.0, 0.0, 0.0
        try:
            start = time.perf_counter()
            logits, past = self._run(ids, self._empty_past, 0)
            prefill_s = time.perf_counter() - start
            token = self._choose(logits, *sampling)
            ttft_s = encode_s + time.perf_counter() - start
            while True:
                new.append(token)
                if token in self.eos_token_ids or len(new) == budget:
                    reason = "eos" if token in self.eos_token_ids else \
                        "max_new_tokens" if budget == max_new_tokens else "context"
                full = self.tokenizer.decode(new, skip_special_tokens=True)
                # hold back a half-made UTF-8 character (decoded as U+FFFD) until its next byte arrives
                piece = "" if full.endswith("\ufffd") and reason == "closed" else full[len(text):]
                text += piece
                yield Token(token, piece)
                if reason != "closed":
                    break
                start = time.perf_counter()
                logits, past = self._run([token], past, len(ids) + len(new) - 1)  # KV [1, kv_heads, L+n-1, head_dim]
                token = self._choose(logits, *sampling)
                decode_s += time.perf_counter() - start
        finally:
            if reason == "context":
                log.warning("stopped after %d new tokens: prompt (%d) + new tokens reached max_context %d",
                            len(new), len(ids), self.max_context)
            rate = (len(new) - 1) / decode_s if len(new) > 1 and decode_s > 0 else 0.0
            self.last_timings = Timings(len(ids), len(new), reason, prefill_s, ttft_s, decode_s, rate)

    def generate(self, prompt: str | list[int], max_new_tokens: int = 32, do_sample: bool = False,
                 temperature: float = 1.0, top_k: int = 0, top_p: float = 1.0, seed: int | None = None) -> Generation:
        ids = [t.id for t in self.stream(prompt, max_new_tokens, do_sample, temperature, top_k, top_p, seed)]
        return Generation(ids, self.tokenizer.decode(ids, skip_special_tokens=True), self.last_timings)


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(prog="edgekd_generate.py", description="Generate text with an edgekd LM bundle.")
    parser.add_argument("bundle")
    parser.add_argument("prompt")
    parser.add_argument("--max-new-tokens", type=int, default=32)
    parser.add_argument("--sample", action="store_true", help="sample instead of greedy decoding")
    parser.add_argument("--temperature", type=float, default=1.0)
    parser.add_argument("--top-k", type=int, default=0)
    parser.add_argument("--top-p", type=float, default=1.0)
    parser.add_argument("--seed", type=int, default=None)
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args(argv)
    try:
        lm = Generator(args.bundle, threads=args.threads)
        for token in lm.stream(args.prompt, args.max_new_tokens, args.sample, args.temperature, args.top_k,
                               args.top_p, args.seed):
            print(token.text, end="", flush=True)
    except (BundleError, GenerateError, FileNotFoundError) as exc:
        print(f"edgekd_generate: error: {exc}", file=sys.stderr)
        return 2
    t = lm.last_timings
    print(f"\n[{t.new_tokens} tokens, stop: {t.stop_reason}, first token {t.ttft_s * 1000:.0f} ms, "
          f"decode {t.decode_tokens_per_s:.1f} tokens/s]", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
