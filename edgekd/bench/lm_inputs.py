"""The causal-LM bench inputs: the same prompts and evaluation windows for every model.

lm-inputs.npz holds
  prompts  [P, prompt_tokens]  the first prompt_tokens tokens of P seeded test windows (the prefill, then greedy decode)
  windows  [W, L]              W test windows of L tokens, evenly spaced over the split (teacher-forced quality)
Models that share a tokenizer share one file; a model with another tokenizer gets its own ids of the same
documents (lm-inputs-2.npz...), so agreement is only computed between rows with the same file.
"""

import hashlib
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.bench.config import LMBenchConfig
from edgekd.errors import DataError

log = logging.getLogger(__name__)


@dataclass
class LMInputs:
    npz: Path
    prompts: int
    prompt_tokens: int
    windows: int
    window_tokens: int
    describe: str  # one phrase for reports: where the inputs came from


def _save(out_dir: Path, stem: str, prompts: np.ndarray, windows: np.ndarray, describe: str) -> LMInputs:
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / f"{stem}.npz"
    np.savez(path, prompts=prompts.astype(np.int64), windows=windows.astype(np.int64))
    return LMInputs(path, prompts.shape[0], prompts.shape[1], windows.shape[0], windows.shape[1], describe)


def from_documents(tokenizer_dir: Path, docs: list[str], window_tokens: int, cfg: LMBenchConfig, seed: int,
                   out_dir: Path, describe: str, stem: str = "lm-inputs") -> LMInputs:
    """Tokenise ``docs`` (doc EOS doc EOS ..., as training does) into prompts and evaluation windows."""
    from edgekd.data.text import evenly_spaced, token_windows
    from edgekd.models import load_tokenizer

    tok = load_tokenizer(str(tokenizer_dir))
    windows = token_windows(tok, docs, window_tokens, where=describe)  # [n, L]
    # Prompts come from windows at least prompt_tokens long (longer than L when the prompt is).
    block = max(cfg.prompt_tokens, window_tokens)
    long = windows if block == window_tokens else token_windows(tok, docs, block, where=describe)
    order = np.random.default_rng(seed).permutation(len(long))
    if len(long) < cfg.prompts:
        log.warning("%s: only %d windows of %d tokens for %d prompts; prompts repeat", describe, len(long), block,
                    cfg.prompts)
    picked = order[np.arange(cfg.prompts) % len(long)]
    prompts = np.asarray([long[i][: cfg.prompt_tokens] for i in picked])
    evaluated = np.asarray(evenly_spaced(windows, cfg.eval_windows))
    return _save(out_dir, stem, prompts, evaluated, describe)


def per_tokenizer(tokenizer_dirs: list[Path], docs: list[str], window_tokens: int, cfg: LMBenchConfig, seed: int,
                  out_dir: Path, describe: str) -> dict[Path, LMInputs]:
    """Inputs per tokenizer folder, one tokenisation per distinct tokenizer.json content."""
    by_content: dict[str, LMInputs] = {}
    out = {}
    for folder in tokenizer_dirs:
        tokenizer_json = Path(folder) / "tokenizer.json"
        if not tokenizer_json.is_file():
            raise DataError(f"{folder}: no tokenizer.json; the LM bench tokenises the test documents with each "
                            "model's own tokenizer")
        digest = hashlib.sha256(tokenizer_json.read_bytes()).hexdigest()
        if digest not in by_content:
            stem = "lm-inputs" if not by_content else f"lm-inputs-{len(by_content) + 1}"
            by_content[digest] = from_documents(folder, docs, window_tokens, cfg, seed, out_dir, describe, stem)
        out[folder] = by_content[digest]
    return out


def synthetic(vocab_size: int, low_id: int, window_tokens: int, cfg: LMBenchConfig, seed: int,
              out_dir: Path) -> LMInputs:
    """Random token ids in [low_id, vocab_size): speed only (perplexity on random ids means nothing)."""
    if vocab_size <= low_id:
        raise DataError(f"synthetic LM inputs: vocabulary size {vocab_size} leaves no ids above {low_id}")
    rng = np.random.default_rng(seed)
    prompts = rng.integers(low_id, vocab_size, size=(cfg.prompts, cfg.prompt_tokens))
    windows = rng.integers(low_id, vocab_size, size=(cfg.eval_windows, window_tokens))
    return _save(out_dir, "lm-inputs", prompts, windows,
                 f"{cfg.prompts} synthetic prompts of {cfg.prompt_tokens} random tokens")
