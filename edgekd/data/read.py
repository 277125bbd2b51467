"""Read (text, label) pairs from CSV / TSV / JSONL / JSON / Parquet files or a hub dataset."""

import bz2
import csv
import gzip
import io
import json
from pathlib import Path

from edgekd.errors import AssetError, DataError

_OPENERS = {".bz2": bz2.open, ".gz": gzip.open}


def _open_text(path: Path) -> io.TextIOBase:
    opener = _OPENERS.get(path.suffix)
    if opener is not None:
        return io.TextIOWrapper(opener(path, "rb"), encoding="utf-8", newline="")
    return open(path, encoding="utf-8", newline="")


def _format_of(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in _OPENERS]
    return suffixes[-1].lstrip(".").lower() if suffixes else ""


def _rows(path: Path) -> list[dict]:
    fmt = _format_of(path)
    try:
        if fmt in ("csv", "tsv"):
            with _open_text(path) as f:
                return list(csv.DictReader(f, delimiter="\t" if fmt == "tsv" else ","))
        if fmt == "jsonl":
            with _open_text(path) as f:
                return [json.loads(line) for line in f if line.strip()]
        if fmt == "json":
            with _open_text(path) as f:
                data = json.load(f)
            if not isinstance(data, list):
                raise DataError(f"{path}: a .json dataset must be a list of objects")
            return data
        if fmt == "parquet":
            import pyarrow.parquet as pq

            return pq.read_table(path).to_pylist()
    except (UnicodeDecodeError, json.JSONDecodeError, csv.Error, OSError) as exc:
        raise DataError(f"{path}: cannot be read as {fmt}: {exc}") from exc
    raise DataError(f"{path}: unsupported file type {fmt!r}; use csv, tsv, jsonl, json or parquet")


def _hub_rows(name: str, split: str) -> list[dict]:
    try:
        import datasets
    except ImportError as exc:
        raise AssetError("hub datasets need the 'datasets' package: pip install 'edgekd[hub]'") from exc
    try:
        return datasets.load_dataset(name, split=split).to_list()
    except Exception as exc:  # the hub client raises many types; the message is what matters
        raise AssetError(f"hub dataset {name!r} (split {split!r}) could not be loaded: {exc}") from exc


def read_labelled_text(
    source: Path | str, text_column: str, label_column: str, drop_labels: list[str], hub_split: str = "train"
) -> list[tuple[str, str]]:
    """Return (text, label) pairs with labels as strings; rows with an empty text are skipped."""
    if isinstance(source, str) and source.startswith("hub:"):
        rows, where = _hub_rows(source.removeprefix("hub:"), hub_split), source
    else:
        rows, where = _rows(Path(source)), str(source)
    if not rows:
        raise DataError(f"{where}: the dataset has no rows")
    columns = set(rows[0])
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(repr(m) for m in missing)}; columns are {', '.join(sorted(map(str, columns)))}"
        )
    dropped = set(drop_labels)
    pairs = []
    for i, row in enumerate(rows):
        text, label = row.get(text_column), row.get(label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{where}: row {i + 1} has no value in label column {label_column!r}")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        label = str(label).strip()
        if label in dropped or text is None or not str(text).strip():
            continue
        pairs.append((str(text).strip(), label))
    return pairs
