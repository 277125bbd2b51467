"""Data files that cannot be used stop with one line naming the file and the row or line."""

import bz2
import json

import pytest

from edgekd.data import make_splits, read_labelled_text
from edgekd.errors import DataError


def _read(path):
    return read_labelled_text(path, "text", "label", [])


def _message(path) -> str:
    with pytest.raises(DataError) as info:
        _read(path)
    return str(info.value)


def test_non_utf8_csv_names_the_line(tmp_path):
    path = tmp_path / "latin1.csv"
    path.write_bytes("text,label\nfine film,pos\ncaf\u00e9 noir,neg\n".encode("latin-1"))
    message = _message(path)
    assert "latin1.csv" in message and "line 3" in message and "UTF-8" in message and "0xe9" in message


def test_non_utf8_inside_a_compressed_file_names_the_line(tmp_path):
    path = tmp_path / "d.jsonl.bz2"
    lines = [json.dumps({"text": "ok", "label": "a"}).encode()] * 4 + [b'{"text": "na\xefve", "label": "b"}']
    path.write_bytes(bz2.compress(b"\n".join(lines) + b"\n"))
    message = _message(path)
    assert "d.jsonl.bz2" in message and "line 5" in message and "UTF-8" in message


def test_byte_order_mark_does_not_hide_the_first_column(tmp_path):
    path = tmp_path / "bom.csv"
    path.write_bytes("\ufefftext,label\nfine film,pos\n".encode("utf-8"))
    assert _read(path) == [("fine film", "pos")]


def test_malformed_jsonl_names_the_file_line_not_the_column(tmp_path):
    path = tmp_path / "d.jsonl"
    good = json.dumps({"text": "a fine film", "label": "pos"})
    # a blank line is skipped but still counted, so the broken record is on line 4 of the file
    path.write_text(f"{good}\n{good}\n\n{{\"text\": \"oops\", \"label\": }}\n{good}\n")
    message = _message(path)
    assert "d.jsonl" in message and "line 4" in message and "not valid JSON" in message


def test_jsonl_line_that_is_not_an_object(tmp_path):
    path = tmp_path / "d.jsonl"
    path.write_text(json.dumps({"text": "a", "label": "x"}) + "\n" + json.dumps(["b", "y"]) + "\n")
    message = _message(path)
    assert "d.jsonl" in message and "line 2" in message and "not an object" in message


def test_malformed_json_names_the_line(tmp_path):
    path = tmp_path / "d.json"
    path.write_text('[\n {"text": "a", "label": "x"},\n {"text": "b" "label": "y"}\n]\n')
    message = _message(path)
    assert "d.json" in message and "line 3" in message


def test_csv_row_with_more_fields_than_the_header(tmp_path):
    path = tmp_path / "comma.csv"
    # row 3 has an unquoted comma in its text: its label would silently have become " tired and flat"
    path.write_text("text,label\na warm film,pos\na dull film,neg\nlong, tired and flat,neg\nfine,pos\n")
    message = _message(path)
    assert "comma.csv" in message and "row 3 (line 4)" in message
    assert "3 fields but the header has 2" in message and "quote" in message


def test_tsv_row_with_extra_tab(tmp_path):
    path = tmp_path / "d.tsv"
    path.write_text("text\tlabel\ngood\tpos\nbad\tneg\textra\n")
    message = _message(path)
    assert "d.tsv" in message and "row 2 (line 3)" in message and "'\\t'" in message


def test_quoted_commas_are_fine(tmp_path):
    path = tmp_path / "quoted.csv"
    path.write_text('text,label\n"long, tired and flat",neg\n"warm, witty",pos\n')
    assert _read(path) == [("long, tired and flat", "neg"), ("warm, witty", "pos")]


@pytest.mark.parametrize("variant", ["Fresh", "FRESH", "fre sh"])
def test_labels_differing_in_case_or_inner_spacing_are_refused(tmp_path, variant):
    path = tmp_path / "labels.csv"
    path.write_text(f"text,label\nwarm,fresh\ndull,rotten\nwitty,{variant}\n")
    message = _message(path)
    assert "labels.csv" in message and "row 3 (line 4)" in message and "row 1 (line 2)" in message
    assert repr(variant) in message and "'fresh'" in message and "case or spacing" in message


def test_label_variant_reported_with_its_spaces_in_jsonl(tmp_path):
    path = tmp_path / "d.jsonl"
    rows = [{"text": "warm", "label": "Fresh"}, {"text": "dull", "label": "rotten"},
            {"text": "witty", "label": "fresh "}]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    message = _message(path)
    assert "line 3" in message and "'fresh '" in message and "'Fresh'" in message


def test_surrounding_spaces_alone_are_the_same_label(tmp_path):
    path = tmp_path / "spaces.csv"
    path.write_text("text,label\nwarm,fresh\nwitty, fresh \ndull,rotten\n")
    assert [label for _, label in _read(path)] == ["fresh", "fresh", "rotten"]


def test_dropped_label_variant_is_not_a_conflict(tmp_path):
    path = tmp_path / "drop.csv"
    path.write_text("text,label\nwarm,fresh\nwitty,Fresh\ndull,rotten\n")
    assert read_labelled_text(path, "text", "label", ["Fresh"]) == [("warm", "fresh"), ("dull", "rotten")]


def test_missing_label_names_row_and_line(tmp_path):
    path = tmp_path / "d.csv"
    path.write_text("text,label\nwarm,fresh\ndull,\n")
    message = _message(path)
    assert "row 2 (line 3)" in message and "'label'" in message


def test_label_in_test_but_not_in_train(tmp_path):
    # two texts of class "rare": one goes to test, one to validation, none to train
    pairs = [(f"common {i}", "common") for i in range(40)] + [("rare 1", "rare"), ("rare 2", "rare")]
    with pytest.raises(DataError) as info:
        make_splits(pairs, 0.3, 0.3, seed=0, where="tiny.csv")
    message = str(info.value)
    assert "tiny.csv" in message and "'rare'" in message and "not in train" in message
    assert "validation split" in message or "test split" in message


def test_train_cap_that_removes_a_class(tmp_path):
    pairs = [(f"common {i}", "common") for i in range(200)] + [(f"rare {i}", "rare") for i in range(6)]
    with pytest.raises(DataError) as info:
        make_splits(pairs, 0.1, 0.2, seed=0, max_train_examples=2, where="big.csv")
    message = str(info.value)
    assert "big.csv" in message and "'rare'" in message and "max_train_examples=2" in message
