"""Read (text, label) pairs from CSV / TSV / JSONL / JSON / Parquet files or a hub dataset.

Problems in a file are reported with the row (and, for line-based formats, the file's line) where
they are: a byte that is not UTF-8, a JSONL line that is not JSON, a CSV row with more fields than
the header, two spellings of one label.
"""

import bz2
import csv
import gzip
import io
import json
from pathlib import Path

from edgekd.errors import AssetError, DataError

_OPENERS = {".bz2": bz2.open, ".gz": gzip.open}


def _format_of(path: Path) -> str:
    suffixes = [s for s in path.suffixes if s not in _OPENERS]
    return suffixes[-1].lstrip(".").lower() if suffixes else ""


def _read_text(path: Path) -> str:
    """The whole (decompressed) file as text; the first byte that is not UTF-8 is reported by line."""
    opener = _OPENERS.get(path.suffix, open)
    try:
        with opener(path, "rb") as f:
            data = f.read()
    except (OSError, EOFError) as exc:  # also a corrupt or truncated .gz / .bz2 stream
        raise DataError(f"{path}: cannot be read: {exc}") from exc
    try:
        # utf-8-sig drops the byte-order mark some editors write, which would otherwise glue onto the first column name.
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        line = data.count(b"\n", 0, exc.start) + 1
        raise DataError(
            f"{path}: line {line} is not valid UTF-8 (byte {data[exc.start]:#04x}); save the file as UTF-8"
        ) from None


def _csv_rows(path: Path, text: str, delimiter: str) -> tuple[list[dict], list[int]]:
    reader = csv.DictReader(io.StringIO(text, newline=""), delimiter=delimiter)
    rows, lines = [], []
    try:
        for number, row in enumerate(reader, start=1):
            # DictReader keeps fields beyond the header under the key None: an unquoted delimiter
            # inside a text would otherwise shift the label into a new, bogus class.
            if None in row:
                width = len(reader.fieldnames)
                raise DataError(
                    f"{path}: row {number} (line {reader.line_num}) has {width + len(row[None])} fields but the "
                    f"header has {width}; quote fields that contain {delimiter!r}"
                )
            rows.append(row)
            lines.append(reader.line_num)
    except csv.Error as exc:
        raise DataError(f"{path}: line {reader.line_num}: not valid {_format_of(path)}: {exc}") from None
    return rows, lines


def _jsonl_rows(path: Path, text: str) -> tuple[list[dict], list[int]]:
    rows, lines = [], []
    # Split on "\n" only: str.splitlines() would also break at U+2028 and similar, which JSON allows unescaped.
    for number, line in enumerate(text.split("\n"), start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: line {number} is not valid JSON: {exc.msg} (column {exc.colno})") from None
        if not isinstance(row, dict):
            raise DataError(f"{path}: line {number} is a JSON {type(row).__name__}, not an object with named columns")
        rows.append(row)
        lines.append(number)
    return rows, lines


def _json_rows(path: Path, text: str) -> list[dict]:
    try:
        data = json.loads(text)
    except json.JSONDecodeError as exc:
        raise DataError(f"{path}: line {exc.lineno} is not valid JSON: {exc.msg} (column {exc.colno})") from None
    if not isinstance(data, list):
        raise DataError(f"{path}: a .json dataset must be a list of objects")
    for number, row in enumerate(data, start=1):
        if not isinstance(row, dict):
            raise DataError(f"{path}: row {number} is a JSON {type(row).__name__}, not an object with named columns")
    return data


def _parquet_rows(path: Path) -> list[dict]:
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        return pq.read_table(path).to_pylist()
    except (OSError, pa.ArrowException) as exc:
        raise DataError(f"{path}: cannot be read as parquet: {exc}") from exc


def _rows(path: Path) -> tuple[list[dict], list[int] | None]:
    """The file's rows, and the file line each row ends on (None for formats without lines)."""
    fmt = _format_of(path)
    if fmt in ("csv", "tsv"):
        return _csv_rows(path, _read_text(path), "\t" if fmt == "tsv" else ",")
    if fmt == "jsonl":
        return _jsonl_rows(path, _read_text(path))
    if fmt == "json":
        return _json_rows(path, _read_text(path)), None
    if fmt == "parquet":
        return _parquet_rows(path), None
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


def _label_key(label: str) -> str:
    """What two spellings of one label share: no case, no whitespace ("Fresh" and "fre sh" -> "fresh")."""
    return "".join(label.split()).casefold()


def read_labelled_text(
    source: Path | str, text_column: str, label_column: str, drop_labels: list[str], hub_split: str = "train"
) -> list[tuple[str, str]]:
    """Return (text, label) pairs with labels as strings; rows with an empty text are skipped.

    Leading and trailing spaces around a label are ignored; labels that still differ only in case or
    inner spacing ("Fresh" and "fresh") are refused rather than becoming two classes.
    """
    if isinstance(source, str) and source.startswith("hub:"):
        rows, lines, where = _hub_rows(source.removeprefix("hub:"), hub_split), None, source
    else:
        (rows, lines), where = _rows(Path(source)), str(source)
    if not rows:
        raise DataError(f"{where}: the dataset has no rows")
    columns = set(rows[0])
    missing = [c for c in (text_column, label_column) if c not in columns]
    if missing:
        raise DataError(
            f"{where}: no column {', '.join(repr(m) for m in missing)}; columns are {', '.join(sorted(map(str, columns)))}"
        )

    def place(i: int) -> str:
        return f"row {i + 1}" + (f" (line {lines[i]})" if lines else "")

    dropped = set(drop_labels)
    spellings: dict[str, tuple[str, int]] = {}  # label key -> (label as first written, its row index)
    pairs = []
    for i, row in enumerate(rows):
        text, label = row.get(text_column), row.get(label_column)
        if label is None or (isinstance(label, str) and not label.strip()):
            raise DataError(f"{where}: {place(i)} has no value in label column {label_column!r}")
        if isinstance(label, float) and label.is_integer():
            label = int(label)
        raw, label = str(label), str(label).strip()
        if label in dropped or text is None or not str(text).strip():
            continue
        first, first_row = spellings.setdefault(_label_key(label), (raw, i))
        if first.strip() != label:
            raise DataError(
                f"{where}: {place(i)} has label {raw!r} but {place(first_row)} has {first!r}; labels that differ only "
                f"in case or spacing would become separate classes: spell them the same"
            )
        pairs.append((str(text).strip(), label))
    return pairs
