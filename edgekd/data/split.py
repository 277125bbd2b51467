"""Seeded, stratified train / validation / test splits with no text in two splits, plus an optional pool of
unlabelled texts (rows whose label is in ``data.unlabelled_labels``) that no split contains."""

import hashlib
import json
import logging
import random
from dataclasses import dataclass, field
from pathlib import Path

from edgekd.artifacts import atomic_write_text
from edgekd.errors import DataError

log = logging.getLogger(__name__)
SPLIT_NAMES = ("train", "validation", "test")
UNLABELLED_FILE = "unlabelled.jsonl"


@dataclass
class Split:
    texts: list[str]
    labels: list[int]

    def __len__(self) -> int:
        return len(self.texts)


@dataclass
class Splits:
    label_names: list[str]
    train: Split
    validation: Split
    test: Split
    # In-domain texts without a usable label (e.g. plot synopses next to reviews); only a teacher labels them.
    unlabelled: list[str] = field(default_factory=list)

    def __getitem__(self, name: str) -> Split:
        return getattr(self, name)


def _label_order(labels: set[str]) -> list[str]:
    # Integer labels keep their numeric order (0, 1, 2 ... 10); string labels sort alphabetically.
    if all(label.lstrip("-").isdigit() for label in labels):
        return sorted(labels, key=int)
    return sorted(labels)


def make_splits(
    pairs: list[tuple[str, str]], validation_fraction: float, test_fraction: float, seed: int,
    max_train_examples: int | None = None, where: str = "dataset", unlabelled_labels: list[str] = (),
) -> Splits:
    """Deduplicate texts (first label wins), then split each class by the same fractions.

    The order of examples inside a class is fixed by a hash of the text before the seeded shuffle,
    so the split depends only on the data and the seed, not on the file's row order. Rows whose
    label is in ``unlabelled_labels`` become ``Splits.unlabelled`` instead, without the texts that
    also appear with a real label (those stay in their split, so no split text is ever unlabelled too).
    """
    held_back = set(unlabelled_labels)
    unlabelled = [text for text, label in pairs if label in held_back]
    pairs = [(text, label) for text, label in pairs if label not in held_back]
    first_label: dict[str, str] = {}
    for text, label in pairs:
        first_label.setdefault(text, label)
    if len(pairs) != len(first_label):
        log.info("dropped %d duplicate texts (kept the first label of each)", len(pairs) - len(first_label))
    names = _label_order(set(first_label.values()))
    if len(names) < 2:
        raise DataError(f"{where}: needs at least 2 classes, found {names}")
    by_class: dict[str, list[str]] = {name: [] for name in names}
    for text, label in first_label.items():
        by_class[label].append(text)
    rng = random.Random(seed)
    parts: dict[str, list[tuple[str, int]]] = {s: [] for s in SPLIT_NAMES}
    for label_id, name in enumerate(names):
        texts = sorted(by_class[name], key=lambda t: hashlib.sha1(t.encode()).hexdigest())
        rng.shuffle(texts)
        n_test = round(len(texts) * test_fraction)
        n_val = round(len(texts) * validation_fraction)
        parts["test"] += [(t, label_id) for t in texts[:n_test]]
        parts["validation"] += [(t, label_id) for t in texts[n_test:n_test + n_val]]
        parts["train"] += [(t, label_id) for t in texts[n_test + n_val:]]
    for name in SPLIT_NAMES:
        rng.shuffle(parts[name])
        if not parts[name]:
            raise DataError(f"{where}: the {name} split is empty ({len(first_label)} unique texts); use more data")
    if max_train_examples is not None:
        parts["train"] = parts["train"][:max_train_examples]
    _check_train_has_every_class(names, parts, {n: len(t) for n, t in by_class.items()}, max_train_examples, where)
    splits = {s: Split([t for t, _ in parts[s]], [y for _, y in parts[s]]) for s in SPLIT_NAMES}
    return Splits(label_names=names, **splits, unlabelled=_unlabelled_pool(unlabelled, set(first_label), rng))


def _unlabelled_pool(texts: list[str], labelled: set[str], rng: random.Random) -> list[str]:
    """Unique texts not in any split, in a seeded order that does not depend on the file's row order."""
    pool = sorted(set(texts) - labelled, key=lambda t: hashlib.sha1(t.encode()).hexdigest())
    if len(set(texts)) != len(pool):
        log.info("unlabelled pool: left out %d texts that also have a label", len(set(texts) & labelled))
    rng.shuffle(pool)
    return pool


def _check_train_has_every_class(names: list[str], parts: dict[str, list[tuple[str, int]]], sizes: dict[str, int],
                                 max_train_examples: int | None, where: str) -> None:
    """A class scored in validation or test but never trained on can only be predicted wrong."""
    in_train = {label_id for _, label_id in parts["train"]}
    cap = f", data.max_train_examples={max_train_examples}" if max_train_examples is not None else ""
    for split in ("validation", "test"):
        for label_id in sorted({label_id for _, label_id in parts[split]} - in_train):
            name = names[label_id]
            raise DataError(
                f"{where}: label {name!r} is in the {split} split but not in train ({sizes[name]} unique texts{cap}); "
                f"add examples of it, or drop it with data.drop_labels"
            )


def save_splits(splits: Splits, folder: Path) -> None:
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "labels.json", json.dumps(splits.label_names, indent=1))
    for name in SPLIT_NAMES:
        split = splits[name]
        lines = (json.dumps({"text": t, "label": y}, ensure_ascii=False) for t, y in zip(split.texts, split.labels))
        atomic_write_text(folder / f"{name}.jsonl", "\n".join(lines) + "\n")
    if splits.unlabelled:
        lines = (json.dumps({"text": t}, ensure_ascii=False) for t in splits.unlabelled)
        atomic_write_text(folder / UNLABELLED_FILE, "\n".join(lines) + "\n")


def _jsonl(path: Path) -> list[dict]:
    return [json.loads(line) for line in path.read_text(encoding="utf-8").split("\n") if line]


def load_splits(folder: Path) -> Splits:
    """The saved splits; ``unlabelled`` is empty when the folder has no unlabelled pool."""
    label_names = json.loads((folder / "labels.json").read_text())
    parts = {}
    for name in SPLIT_NAMES:
        rows = _jsonl(folder / f"{name}.jsonl")
        parts[name] = Split([r["text"] for r in rows], [r["label"] for r in rows])
    pool = folder / UNLABELLED_FILE
    unlabelled = [r["text"] for r in _jsonl(pool)] if pool.is_file() else []
    return Splits(label_names=label_names, **parts, unlabelled=unlabelled)
