"""Plain-text data for causal LMs: reading documents, splitting by document, packing token windows."""

import bz2
import gzip
import json
import random

import pytest

from edgekd.data.text import (TextSplits, load_text_splits, read_documents, save_text_splits, split_documents,
                              text_stats, token_windows)
from edgekd.errors import AssetError, ConfigError, DataError

WORDS = "the a cat dog sat ran on under mat log red blue big small and then it was . ,".split()


def _tokenizer(eos: bool = True, model_max_length: int = 16):
    """A word-level tokenizer that adds a BOS when asked to (so a test sees if special tokens slip in)."""
    from tokenizers import Tokenizer, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(["<unk>", "<s>", "<|endoftext|>"] + WORDS)}
    core = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    core.pre_tokenizer = pre_tokenizers.WhitespaceSplit()
    core.post_processor = processors.TemplateProcessing(single="<s> $A", special_tokens=[("<s>", 1)])
    # model_max_length is far below the documents' lengths: windows must not be truncated to it.
    kwargs = {"eos_token": "<|endoftext|>"} if eos else {}
    return PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", bos_token="<s>",
                                   model_max_length=model_max_length, **kwargs)


def _docs(n: int, seed: int = 0) -> list[str]:
    rng = random.Random(seed)
    return [" ".join(rng.choices(WORDS, k=rng.randint(3, 40))) + f" {i}" for i in range(n)]


def _write(path, text: str | bytes):
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return path


def test_folder_is_read_recursively_in_relative_path_order(tmp_path):
    _write(tmp_path / "top.txt", "fourth\n")
    _write(tmp_path / "b" / "1.txt", "third")
    _write(tmp_path / "a" / "sub" / "3.txt", "second line one\n\nline three  \n\n")
    _write(tmp_path / "a" / "2.txt", "  first")
    _write(tmp_path / "a" / "empty.txt", " \n\t\n")  # skipped
    _write(tmp_path / "a" / "notes.md", "not a document")
    assert read_documents(tmp_path) == ["  first", "second line one\n\nline three", "third", "fourth"]


def test_single_text_files_plain_and_compressed(tmp_path):
    assert read_documents(_write(tmp_path / "one.txt", "a b\nc\n\n")) == ["a b\nc"]
    gz = tmp_path / "one.txt.gz"
    gz.write_bytes(gzip.compress("zipped\ntext \n".encode()))
    assert read_documents(gz) == ["zipped\ntext"]
    with pytest.raises(DataError, match=r"empty\.txt: no documents with text \(1 empty\)"):
        read_documents(_write(tmp_path / "empty.txt", "\n  \n"))


def test_bad_utf8_names_file_and_line(tmp_path):
    _write(tmp_path / "ok.txt", "fine")
    _write(tmp_path / "deep" / "bad.txt", b"line one\nline two\nbad \xff byte\n")
    with pytest.raises(DataError, match=r"deep/bad\.txt: line 3 is not valid UTF-8 \(byte 0xff\)"):
        read_documents(tmp_path)


def test_folder_and_path_errors(tmp_path):
    _write(tmp_path / "only.md", "x")
    with pytest.raises(DataError, match=r"has no \.txt files"):
        read_documents(tmp_path)
    with pytest.raises(DataError, match=r"missing: no such file or folder"):
        read_documents(tmp_path / "missing")
    with pytest.raises(DataError, match=r"only\.md: unsupported file type 'md'.*\.txt"):
        read_documents(tmp_path / "only.md")


def test_jsonl_text_column_skips_empty_rows(tmp_path):
    rows = [{"body": "first doc\nwith a newline  ", "id": 1}, {"body": "   ", "id": 2}, {"body": None, "id": 3},
            {"body": "second", "id": 4}]
    path = _write(tmp_path / "d.jsonl", "\n".join(json.dumps(r) for r in rows) + "\n")
    assert read_documents(path, text_column="body") == ["first doc\nwith a newline", "second"]
    with pytest.raises(DataError, match=r"d\.jsonl: no column 'text'; columns are body, id"):
        read_documents(path)
    with pytest.raises(DataError, match=r"d\.jsonl: row 1 \(line 1\) has a int in text column 'id'"):
        read_documents(path, text_column="id")
    blank = _write(tmp_path / "blank.jsonl", json.dumps({"text": ""}) + "\n" + json.dumps({"text": " "}) + "\n")
    with pytest.raises(DataError, match=r"blank\.jsonl: no documents with text \(2 empty\)"):
        read_documents(blank)


def test_csv_and_tsv_columns_keep_quoted_newlines(tmp_path):
    csv_path = _write(tmp_path / "d.csv", 'title,content\nx,"para one\n\npara two"\ny,plain\n')
    assert read_documents(csv_path, text_column="content") == ["para one\n\npara two", "plain"]
    with pytest.raises(DataError, match=r"d\.csv: no column 'text'; columns are content, title"):
        read_documents(csv_path)
    bad = _write(tmp_path / "bad.csv", "text\nok\n\"a\",\"b\"\n")
    with pytest.raises(DataError, match=r"bad\.csv: row 2 \(line 3\) has 2 fields but the header has 1"):
        read_documents(bad)
    tsv = _write(tmp_path / "d.tsv", "text\tother\nalpha beta\t1\n")
    assert read_documents(tsv) == ["alpha beta"]


def test_parquet_and_compressed_jsonl_tables(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    import pyarrow as pa

    pq.write_table(pa.table({"text": ["one\ntwo ", "", "three"], "n": [1, 2, 3]}), tmp_path / "d.parquet")
    assert read_documents(tmp_path / "d.parquet") == ["one\ntwo", "three"]
    with pytest.raises(DataError, match=r"d\.parquet: row 1 has a int in text column 'n'"):
        read_documents(tmp_path / "d.parquet", text_column="n")
    (tmp_path / "d.jsonl.bz2").write_bytes(bz2.compress(b'{"text": "packed"}\n'))
    assert read_documents(tmp_path / "d.jsonl.bz2") == ["packed"]


def test_split_is_stable_under_order_and_moves_with_seed():
    docs = _docs(60)
    splits = split_documents(docs, 0.1, 0.2, seed=3)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (42, 6, 12)
    shuffled = docs[::-1] + docs[:5]  # another order, with duplicates
    assert split_documents(shuffled, 0.1, 0.2, seed=3) == splits
    other = split_documents(docs, 0.1, 0.2, seed=4)
    assert set(other.test) != set(splits.test)
    for s in (splits, other):  # by whole document: every document in exactly one split
        parts = [set(s.train), set(s.validation), set(s.test)]
        assert sum(map(len, parts)) == len(set().union(*parts)) == len(docs)
        assert set().union(*parts) == set(docs)


def test_split_gives_each_held_out_split_at_least_one_document():
    splits = split_documents(_docs(4), 0.05, 0.05, seed=0)
    assert (len(splits.train), len(splits.validation), len(splits.test)) == (2, 1, 1)
    with pytest.raises(DataError, match=r"corpus\.txt: the train split is empty \(2 unique documents"):
        split_documents(_docs(2) * 3, 0.1, 0.1, seed=0, where="corpus.txt")
    with pytest.raises(ConfigError, match=r"test_fraction=0.0 must be between 0 and 1"):
        split_documents(_docs(10), 0.1, 0.0, seed=0)
    with pytest.raises(ConfigError, match=r"validation_fraction \+ test_fraction = 1"):
        split_documents(_docs(10), 0.5, 0.5, seed=0)


def test_save_and_load_round_trip(tmp_path):
    splits = TextSplits(train=["line one\nline two", "uni\u2028code \u00e9 \U0001f600"], validation=["v"],
                        test=['quote " and \\ backslash'])
    save_text_splits(splits, tmp_path / "s")
    assert load_text_splits(tmp_path / "s") == splits
    assert not [p for p in (tmp_path / "s").iterdir() if p.name.startswith(".")]  # no temporary files left
    (tmp_path / "s" / "test.jsonl").unlink()
    with pytest.raises(AssetError, match=r"test\.jsonl: missing"):
        load_text_splits(tmp_path / "s")


def test_windows_pack_documents_with_eos_separators():
    tok = _tokenizer()
    docs = _docs(25)
    eos = tok.convert_tokens_to_ids("<|endoftext|>")
    stream = []
    for doc in docs:
        ids = [tok.convert_tokens_to_ids(w) for w in doc.split()]  # word-level: one id per word, digits are <unk>
        stream += ids + [eos]
    assert max(len(d.split()) for d in docs) > tok.model_max_length  # long documents must not be truncated
    windows = token_windows(tok, docs, block_size=16)
    assert all(len(w) == 16 for w in windows)
    assert len(windows) == len(stream) // 16 and len(stream) % 16  # the partial last window is dropped
    assert sum(windows, []) == stream[: len(windows) * 16]
    assert 1 not in sum(windows, [])  # no BOS: the tokenizer's special tokens are not added
    # eos_id overrides the tokenizer's EOS (a chat model's end-of-turn is not the document separator).
    assert token_windows(tok, docs, 16, eos_id=0)[0] == [0 if t == eos else t for t in windows[0]]


def test_windows_errors():
    with pytest.raises(ConfigError, match=r"tokenizer has no EOS token; "):
        token_windows(_tokenizer(eos=False), ["the cat sat"], block_size=2)
    assert token_windows(_tokenizer(eos=False), ["the cat sat"], block_size=2, eos_id=2) == [[3, 5], [7, 2]]
    with pytest.raises(DataError, match=r"validation: 2 documents give 7 tokens \(with EOS\), fewer than one window "
                                        r"of block_size=8"):
        token_windows(_tokenizer(), ["the cat", "a dog sat"], block_size=8, where="validation")
    with pytest.raises(ConfigError, match=r"block_size=0 must be at least 1"):
        token_windows(_tokenizer(), ["the cat"], block_size=0)


def test_text_stats_counts_documents_and_packed_tokens():
    splits = TextSplits(train=["the cat sat", "a dog"], validation=["red"], test=["big blue log ran on the mat"])
    stats = text_stats(splits, _tokenizer())
    assert stats == {"train": {"documents": 2, "tokens": 7}, "validation": {"documents": 1, "tokens": 2},
                     "test": {"documents": 1, "tokens": 8}}
    assert stats["train"]["tokens"] == len(sum(token_windows(_tokenizer(), splits.train, 1), []))
