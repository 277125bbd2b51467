"""The inputs every benchmarked model sees: the same texts, the same sampled rows in the same order.

Models that share a tokenizer share one tokenisation; a model with its own tokenizer (a student whose
vocabulary was trimmed) gets its own ids of the same texts (inputs-2.npz, ...), whose lengths may differ.

inputs.npz holds
  real_ids / real_offsets   token ids of every evaluation row (ragged, concatenated) and row offsets
  labels                    class index per row (-1 where unknown)
  fixed_ids                 one input of exactly fixed_length tokens made of real text
  sample                    row indices timed batch-1 in every round, in this order (seeded)
texts.json holds the raw texts, for rows that time the deploy bundle with its tokenizer.
"""

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from edgekd.artifacts import atomic_write_text
from edgekd.errors import EdgekdError


@dataclass
class BenchInputs:
    npz: Path
    texts: Path | None  # None for synthetic inputs (there is no text to tokenise)
    rows: int
    sample: int
    labelled: bool
    describe: str  # one phrase for reports: where the inputs came from


def _save(out_dir: Path, rows: list[list[int]], labels: list[int] | None, fixed: list[int], sample_size: int | None,
          seed: int, stem: str = "inputs") -> tuple[Path, int]:
    if not rows:
        raise EdgekdError("the benchmark has no inputs (empty dataset)")
    n = len(rows)
    rng = np.random.default_rng(seed)
    # A seeded sample, shuffled so that lengths are mixed through each pass (no slow tail at the end).
    sample = rng.permutation(n)[: min(sample_size or n, n)]
    offsets = np.cumsum([0] + [len(r) for r in rows])
    path = out_dir / f"{stem}.npz"
    np.savez(path, real_ids=np.concatenate([np.asarray(r, dtype=np.int64) for r in rows]), real_offsets=offsets,
             labels=np.asarray(labels if labels is not None else [-1] * n, dtype=np.int64),
             fixed_ids=np.asarray(fixed, dtype=np.int64), sample=sample.astype(np.int64))
    return path, len(sample)


def from_texts(tokenizer_json: Path, texts: list[str], labels: list[int] | None, max_length: int, fixed_length: int,
               sample_size: int | None, seed: int, out_dir: Path, describe: str,
               stem: str = "inputs") -> BenchInputs:
    """Tokenise ``texts`` with a tokenizer.json (truncated to ``max_length``, no padding) into ``stem``.npz."""
    from tokenizers import Tokenizer

    tok = Tokenizer.from_file(str(tokenizer_json))
    tok.no_padding()
    tok.enable_truncation(max_length)
    rows = [e.ids for e in tok.encode_batch(texts)]
    # The fixed-length input: real test text joined until it is long enough, cut to fixed_length.
    tok.enable_truncation(fixed_length)
    fixed, joined = [], ""
    for text in texts:
        joined += " " + text
        fixed = tok.encode(joined).ids
        if len(fixed) >= fixed_length:
            break
    npz, sample = _save(out_dir, rows, labels, fixed, sample_size, seed, stem)
    texts_path = out_dir / "texts.json"
    atomic_write_text(texts_path, json.dumps(texts, ensure_ascii=False))
    return BenchInputs(npz, texts_path, len(rows), sample, labels is not None, describe)


def per_tokenizer(tokenizer_jsons: list[Path], texts: list[str], labels: list[int] | None, max_length: int,
                  fixed_length: int, sample_size: int | None, seed: int, out_dir: Path,
                  describe: str) -> dict[Path, BenchInputs]:
    """Inputs per tokenizer.json, tokenised once per distinct file content: inputs.npz, inputs-2.npz...

    Every file holds the same texts, and the same seeded sample (it depends only on the row count and
    the seed), so paired comparisons stay on identical texts; only the ids and lengths may differ.
    """
    by_content: dict[str, BenchInputs] = {}
    out = {}
    for path in tokenizer_jsons:
        digest = hashlib.sha256(Path(path).read_bytes()).hexdigest()
        if digest not in by_content:
            stem = "inputs" if not by_content else f"inputs-{len(by_content) + 1}"
            by_content[digest] = from_texts(path, texts, labels, max_length, fixed_length, sample_size, seed, out_dir,
                                            describe, stem=stem)
        out[path] = by_content[digest]
    return out


def synthetic(vocab_size: int, low_id: int, lengths: tuple[int, int], count: int, fixed_length: int, seed: int,
              out_dir: Path) -> BenchInputs:
    """Random token ids in [low_id, vocab_size) with lengths uniform in ``lengths`` (inclusive)."""
    rng = np.random.default_rng(seed)
    sizes = rng.integers(lengths[0], lengths[1] + 1, size=count)
    rows = [rng.integers(low_id, vocab_size, size=int(s)).tolist() for s in sizes]
    fixed = rng.integers(low_id, vocab_size, size=fixed_length).tolist()
    npz, sample = _save(out_dir, rows, None, fixed, None, seed)
    return BenchInputs(npz, None, count, sample, False,
                       f"{count} synthetic inputs, {lengths[0]}-{lengths[1]} random tokens")


def load_inputs(path: str) -> dict[str, object]:
    """Rows as views of one shared array (each ``data[key]`` of an .npz is a fresh copy: slicing rows
    out of a new copy per row would keep thousands of copies alive and inflate the measured RSS)."""
    with np.load(path) as data:
        real_ids, offsets = data["real_ids"], data["real_offsets"]
        return {"rows": np.split(real_ids, offsets[1:-1]), "labels": data["labels"], "fixed": data["fixed_ids"],
                "sample": data["sample"]}
