import json

import pytest

from edgekd.data import load_splits, make_splits, read_labelled_text, save_splits
from edgekd.errors import DataError


def _pairs(n=200, classes=("neg", "pos")):
    return [(f"text number {i}", classes[i % len(classes)]) for i in range(n)]


def test_splits_are_disjoint_stratified_and_seeded():
    pairs = _pairs(300) + [("text number 1", "neg")]  # a duplicate text with a conflicting label
    a = make_splits(pairs, 0.1, 0.2, seed=3)
    # Row order does not change which texts land in which split.
    b = make_splits(list(reversed(_pairs(300))), 0.1, 0.2, seed=3)
    assert sorted(a.test.texts) == sorted(b.test.texts)
    assert sorted(a.validation.texts) == sorted(b.validation.texts)
    assert "text number 1" in a.train.texts + a.validation.texts + a.test.texts
    sets = [set(a[s].texts) for s in ("train", "validation", "test")]
    assert not (sets[0] & sets[1] or sets[0] & sets[2] or sets[1] & sets[2])
    assert sum(len(s) for s in sets) == 300
    assert a.test.labels.count(0) == a.test.labels.count(1) == 30
    assert a.label_names == ["neg", "pos"]
    c = make_splits(pairs, 0.1, 0.2, seed=4)
    assert sorted(c.test.texts) != sorted(a.test.texts)


def test_integer_labels_sorted_numerically():
    splits = make_splits([(f"t{i}", str(i % 11)) for i in range(220)], 0.1, 0.1, seed=0)
    assert splits.label_names == [str(i) for i in range(11)]


def test_single_class_and_empty_split_are_errors():
    with pytest.raises(DataError, match="at least 2 classes"):
        make_splits([(f"t{i}", "a") for i in range(20)], 0.1, 0.1, 0)
    with pytest.raises(DataError, match="split is empty"):
        make_splits([("a", "x"), ("b", "y")], 0.1, 0.1, 0)


def test_save_and_load_roundtrip(tmp_path):
    splits = make_splits(_pairs(50), 0.2, 0.2, seed=0)
    save_splits(splits, tmp_path)
    again = load_splits(tmp_path)
    assert again.label_names == splits.label_names and again.test.texts == splits.test.texts


@pytest.mark.parametrize("fmt", ["csv", "jsonl", "parquet", "tsv"])
def test_reads_each_format(tmp_path, fmt):
    rows = [{"review": f"r{i}", "stars": i % 3} for i in range(9)]
    path = tmp_path / f"d.{fmt}"
    if fmt in ("csv", "tsv"):
        sep = "," if fmt == "csv" else "\t"
        path.write_text(f"review{sep}stars\n" + "".join(f"{r['review']}{sep}{r['stars']}\n" for r in rows))
    elif fmt == "jsonl":
        path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        pq.write_table(pa.Table.from_pylist(rows), path)
    pairs = read_labelled_text(path, "review", "stars", drop_labels=["2"])
    assert pairs == [(f"r{i}", str(i % 3)) for i in range(9) if i % 3 != 2]


def test_missing_column_names_file_and_columns(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("sentence,label\nhello,1\n")
    with pytest.raises(DataError) as info:
        read_labelled_text(path, "text", "label", [])
    assert "d.csv" in str(info.value) and "'text'" in str(info.value) and "sentence" in str(info.value)


def test_unsupported_format(tmp_path):
    path = tmp_path / "d.xlsx"
    path.write_text("x")
    with pytest.raises(DataError, match="unsupported file type"):
        read_labelled_text(path, "text", "label", [])


def _with_plot_rows(n=200):
    plots = [(f"plot synopsis {i}", "plot") for i in range(30)]
    # A plot text that is also a labelled review stays in its split; a repeated plot text is pooled once.
    return _pairs(n) + plots + [("text number 5", "plot"), ("plot synopsis 0", "plot")]


def test_unlabelled_rows_form_a_pool_outside_every_split(tmp_path):
    splits = make_splits(_with_plot_rows(), 0.1, 0.2, seed=3, unlabelled_labels=["plot"])
    assert splits.label_names == ["neg", "pos"]
    assert sorted(splits.unlabelled) == sorted(f"plot synopsis {i}" for i in range(30))
    in_splits = set(splits.train.texts + splits.validation.texts + splits.test.texts)
    assert "text number 5" in in_splits and not in_splits & set(splits.unlabelled)
    # The pool does not move any labelled text: the splits equal those with the plot rows dropped.
    dropped = make_splits(_pairs(200), 0.1, 0.2, seed=3)
    assert all(splits[s].texts == dropped[s].texts for s in ("train", "validation", "test"))
    assert make_splits(_with_plot_rows(), 0.1, 0.2, seed=3, unlabelled_labels=["plot"]).unlabelled == splits.unlabelled
    save_splits(splits, tmp_path / "with")
    assert load_splits(tmp_path / "with").unlabelled == splits.unlabelled
    save_splits(dropped, tmp_path / "without")
    assert not (tmp_path / "without" / "unlabelled.jsonl").exists()
    assert load_splits(tmp_path / "without").unlabelled == []


def test_a_label_both_dropped_and_unlabelled_is_an_error():
    from pydantic import ValidationError

    from edgekd.data import DataConfig

    with pytest.raises(ValidationError, match=r"\['plot'\] are in both data.drop_labels and data.unlabelled_labels"):
        DataConfig(drop_labels=["plot", "x"], unlabelled_labels=["plot"])
    assert DataConfig(drop_labels=["x"], unlabelled_labels=["plot"]).unlabelled_labels == ["plot"]


def test_data_step_keeps_the_pool_under_its_own_key(tmp_path):
    from edgekd.config import validate_pipeline
    from edgekd.pipeline import KeyInputs, prepare_data
    from tests.conftest import make_texts

    path = tmp_path / "reviews.jsonl"
    rows = make_texts(60) + [(f"the plot of film {i}", "plot") for i in range(10)]
    path.write_text("".join(json.dumps({"text": t, "label": y}) + "\n" for t, y in rows))
    folders = {}
    for name, data in {"dropped": {"drop_labels": ["plot"]}, "pooled": {"unlabelled_labels": ["plot"]}}.items():
        config = validate_pipeline({"data": {"source": str(path), **data}, "stages": [{"kind": "teacher"}]})
        folders[name], _ = prepare_data(config, tmp_path / "run", KeyInputs(config))
    assert folders["dropped"] != folders["pooled"]  # the new field is part of the split folder's key
    assert len(load_splits(folders["pooled"]).unlabelled) == 10 and load_splits(folders["dropped"]).unlabelled == []
    manifest = json.loads((folders["pooled"] / "manifest.json").read_text())
    assert manifest["metrics"]["unlabelled"] == 10 and manifest["metrics"]["label_names"] == ["fresh", "rotten"]
