"""Plain text for causal language models: read documents, split them by whole document, pack them into token windows.

A causal LM learns from a token stream, not from (text, label) rows, so the unit here is the *document*: a .txt file,
or one row of a table's text column. Splits are made by document (never by window) so no held-out text leaks into
training through a window that straddles two documents; the split depends only on the documents' content and the seed.
Documents are then tokenised, joined with the tokenizer's EOS id as a separator, and cut into equal windows (the
standard "packing" of GPT-style training), which wastes no compute on padding.
"""

import hashlib
import json
import logging
import random
from dataclasses import dataclass
from pathlib import Path

from edgekd.artifacts import atomic_write_text
from edgekd.data.read import _format_of, _read_text, _rows
from edgekd.errors import AssetError, ConfigError, DataError

log = logging.getLogger(__name__)
TEXT_SPLIT_NAMES = ("train", "validation", "test")
_TABLE_FORMATS = ("csv", "tsv", "jsonl", "json", "parquet")
# Documents per tokenizer call: one batched call is much faster than one call per document, and chunks keep the
# tokenizer's intermediate encodings (offsets, masks) from holding a whole corpus at once.
_TOKENIZE_CHUNK = 512


@dataclass
class TextSplits:
    """Documents (not windows) per split."""

    train: list[str]
    validation: list[str]
    test: list[str]
    # Windows of the validation split that training and the stages score (None: all); evenly spaced, so
    # every part of the split is represented. Kept with the splits because it is a data setting.
    validation_windows: int | None = None
    separator_token: str | None = None  # put after every document (None: the tokenizer's EOS)

    def __getitem__(self, name: str) -> list[str]:
        return getattr(self, name)


SETTINGS_FILE = "text_settings.json"


def _read_txt(path: Path, fallback_encoding: str | None) -> str:
    """A .txt document as UTF-8; with ``fallback_encoding``, a file that is not UTF-8 is decoded with it
    instead (and named in the log), else the bad byte is reported with its file and line."""
    if fallback_encoding is None or _format_of(path) != "txt" or path.suffix != ".txt":
        return _read_text(path)
    data = path.read_bytes()
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError:
        try:
            text = data.decode(fallback_encoding)
        except (UnicodeDecodeError, LookupError):
            return _read_text(path)  # raises the UTF-8 error naming the file and line
        log.warning("%s is not UTF-8; read it as %s (data.fallback_encoding)", path, fallback_encoding)
        return text


def _folder_documents(folder: Path, fallback_encoding: str | None = None) -> tuple[list[str], int]:
    # Sorted by the path relative to the folder ("a/2.txt" < "b/1.txt"), so the order is the same on every machine.
    files = sorted((p for p in folder.rglob("*.txt") if p.is_file()), key=lambda p: p.relative_to(folder).as_posix())
    if not files:
        raise DataError(f"{folder}: the folder has no .txt files (searched recursively)")
    texts = [_read_txt(p, fallback_encoding).rstrip() for p in files]
    return [t for t in texts if t], sum(1 for t in texts if not t)


def _table_documents(path: Path, text_column: str) -> tuple[list[str], int]:
    rows, lines = _rows(path)
    if not rows:
        raise DataError(f"{path}: the file has no rows")
    if text_column not in rows[0]:
        raise DataError(f"{path}: no column {text_column!r}; columns are {', '.join(sorted(map(str, rows[0])))}")
    docs, empty = [], 0
    for i, row in enumerate(rows):
        value = row.get(text_column)
        if value is not None and not isinstance(value, str):
            place = f"row {i + 1}" + (f" (line {lines[i]})" if lines else "")
            raise DataError(
                f"{path}: {place} has a {type(value).__name__} in text column {text_column!r}; it must hold text"
            )
        text = (value or "").rstrip()
        if text.strip():
            docs.append(text)
        else:
            empty += 1
    return docs, empty


def read_documents(source: Path, text_column: str = "text", fallback_encoding: str | None = None) -> list[str]:
    """Documents from a folder of .txt files (recursive, one per file), one .txt file, or a table's text column.

    Tables are csv / tsv / jsonl / json / parquet, optionally .gz / .bz2 compressed (as :mod:`edgekd.data.read`).
    Trailing whitespace is stripped and inner newlines kept; empty or whitespace-only documents are skipped (and
    logged). Files are read as UTF-8; a bad byte is reported with its file and line, unless ``fallback_encoding``
    (e.g. "cp1252") is given: a .txt file that is not UTF-8 is then decoded with it and named in the log.
    """
    source = Path(source)
    if source.is_dir():
        docs, empty = _folder_documents(source, fallback_encoding)
    elif not source.exists():
        raise DataError(f"{source}: no such file or folder; give a folder of .txt files, a .txt file or a table")
    elif _format_of(source) == "txt":
        text = _read_txt(source, fallback_encoding).rstrip()
        docs, empty = ([text], 0) if text.strip() else ([], 1)
    elif _format_of(source) in _TABLE_FORMATS:
        docs, empty = _table_documents(source, text_column)
    else:
        raise DataError(f"{source}: unsupported file type {_format_of(source)!r}; use a folder of .txt files, a .txt "
                        f"file, or {', '.join(_TABLE_FORMATS)} (optionally .gz / .bz2)")
    if empty:
        log.info("%s: skipped %d empty documents", source, empty)
    if not docs:
        raise DataError(f"{source}: no documents with text ({empty} empty); every document is empty or whitespace")
    log.info("%s: read %d documents", source, len(docs))
    return docs


def split_documents(docs: list[str], validation_fraction: float, test_fraction: float, seed: int,
                    where: str = "dataset") -> TextSplits:
    """Deduplicate, then split whole documents: validation and test get their fraction (at least one each).

    Documents are ordered by a hash of their content before the seeded shuffle, so the split depends only on the set
    of documents and the seed, not on file or row order.
    """
    for name, value in (("validation_fraction", validation_fraction), ("test_fraction", test_fraction)):
        if not 0.0 < value < 1.0:
            raise ConfigError(f"{where}: {name}={value} must be between 0 and 1 (exclusive)")
    if validation_fraction + test_fraction >= 1.0:
        raise ConfigError(f"{where}: validation_fraction + test_fraction = {validation_fraction + test_fraction:g} "
                          f"leaves nothing to train on; keep their sum below 1")
    unique = sorted(set(docs), key=lambda d: (hashlib.sha1(d.encode()).hexdigest(), d))
    if len(unique) != len(docs):
        log.info("%s: dropped %d duplicate documents", where, len(docs) - len(unique))
    random.Random(seed).shuffle(unique)
    # At least one document each: LM corpora are often a handful of long documents, where round() would give 0.
    n_test = max(1, round(len(unique) * test_fraction))
    n_val = max(1, round(len(unique) * validation_fraction))
    splits = TextSplits(train=unique[n_test + n_val:], validation=unique[n_test:n_test + n_val], test=unique[:n_test])
    for name in TEXT_SPLIT_NAMES:
        if not splits[name]:
            raise DataError(f"{where}: the {name} split is empty ({len(unique)} unique documents; train, validation "
                            f"and test need one each); use more documents, e.g. one file per document")
    return splits


def save_text_splits(splits: TextSplits, folder: Path) -> None:
    """``{train,validation,test}.jsonl`` with one ``{"text": ...}`` object per line, each written atomically."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    for name in TEXT_SPLIT_NAMES:
        lines = (json.dumps({"text": doc}, ensure_ascii=False) for doc in splits[name])
        atomic_write_text(folder / f"{name}.jsonl", "\n".join(lines) + "\n")
    atomic_write_text(folder / SETTINGS_FILE, json.dumps({"validation_windows": splits.validation_windows,
                                                          "separator_token": splits.separator_token}))


def load_text_splits(folder: Path) -> TextSplits:
    """The splits :func:`save_text_splits` wrote into ``folder``."""
    parts = {}
    for name in TEXT_SPLIT_NAMES:
        path = Path(folder) / f"{name}.jsonl"
        if not path.is_file():
            raise AssetError(f"{path}: missing; the folder does not hold saved text splits")
        # Split on "\n" only: JSON strings may hold U+2028, which str.splitlines() would break at.
        parts[name] = [json.loads(line)["text"] for line in path.read_text(encoding="utf-8").split("\n") if line]
    settings = Path(folder) / SETTINGS_FILE
    extra = json.loads(settings.read_text()) if settings.is_file() else {}
    return TextSplits(**parts, validation_windows=extra.get("validation_windows"),
                      separator_token=extra.get("separator_token"))


def evenly_spaced(windows: list[list[int]], count: int | None) -> list[list[int]]:
    """At most ``count`` of ``windows``, spread over the whole list (None: all)."""
    if count is None or len(windows) <= count:
        return windows
    return [windows[i * len(windows) // count] for i in range(count)]


def _token_ids(tokenizer, docs: list[str]) -> list[list[int]]:
    """Token ids per document, without the special tokens the tokenizer would add (BOS, [CLS]...)."""
    ids: list[list[int]] = []
    for start in range(0, len(docs), _TOKENIZE_CHUNK):
        # verbose=False: documents longer than model_max_length are expected here (they are cut into windows
        # later), so the "sequence length is longer than the maximum" warning would only be noise.
        ids += tokenizer(docs[start:start + _TOKENIZE_CHUNK], add_special_tokens=False, truncation=False,
                         verbose=False)["input_ids"]
    return ids


def token_windows(tokenizer, docs: list[str], block_size: int, *, eos_id: int | None = None,
                  where: str = "text") -> list[list[int]]:
    """Non-overlapping windows of exactly ``block_size`` tokens over doc1 EOS doc2 EOS ...; the remainder is dropped.

    ``eos_id`` overrides the tokenizer's EOS id (e.g. a chat model whose EOS is an end-of-turn token, while
    documents are separated by an end-of-text token); ``where`` names the documents in errors (e.g. the split).
    """
    if block_size < 1:
        raise ConfigError(f"{where}: block_size={block_size} must be at least 1")
    eos = tokenizer.eos_token_id if eos_id is None else eos_id
    if eos is None:
        raise ConfigError("tokenizer has no EOS token; documents are separated by EOS when packed into windows: "
                          "set eos_token in the tokenizer's config or pass eos_id")
    stream: list[int] = []  # [total tokens]: every document followed by EOS
    for ids in _token_ids(tokenizer, docs):
        stream += ids
        stream.append(eos)
    n_windows = len(stream) // block_size
    if n_windows == 0:
        raise DataError(f"{where}: {len(docs)} documents give {len(stream)} tokens (with EOS), fewer than one window "
                        f"of block_size={block_size}; use more text or a smaller block_size")
    if len(stream) % block_size:
        log.debug("%s: dropped the last %d of %d tokens (a partial window)", where, len(stream) % block_size,
                  len(stream))
    return [stream[i * block_size:(i + 1) * block_size] for i in range(n_windows)]


def text_stats(splits: TextSplits, tokenizer) -> dict:
    """Documents and tokens per split, for the manifest; tokens count one EOS per document (the packed stream)."""
    stats = {}
    for name in TEXT_SPLIT_NAMES:
        docs = splits[name]
        n_tokens = sum(len(ids) for ids in _token_ids(tokenizer, docs)) + len(docs)  # + one EOS per document
        stats[name] = {"documents": len(docs), "tokens": n_tokens}
    return stats
