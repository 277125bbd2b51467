"""Vocabulary trimming: identical tokens and logits on the selection texts, a smaller embedding, a
tokenizer that reloads on its own, and a test split that is measured but never selected from."""

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.artifacts import Artifact
from edgekd.data.split import Split, Splits, save_splits
from edgekd.data.tokenize import encode
from edgekd.errors import ConfigError
from edgekd.models import load_classifier, load_tokenizer, save_classifier
from edgekd.stage_context import StageContext
from edgekd.vocab.config import VocabConfig
from edgekd.vocab.core import check_identical_tokenisation, kept_token_ids, max_logit_difference, trim_vocabulary
from tests.conftest import NEGATIVE, NEUTRAL, POSITIVE, make_texts, make_tiny_model_dir, tiny_config

# Selection texts never use these words; test texts may.
HELD_OUT = {"brilliant", "superb", "awful"}
LETTERS = list("abcdefghijklmnopqrstuvwxyz")
# Specials last: their ids move a long way when the vocabulary shrinks, so a missed remap shows.
PIECES_VOCAB = list(dict.fromkeys(["[PAD]", "[UNK]"] + POSITIVE + NEGATIVE + NEUTRAL + LETTERS
                                  + [f"##{c}" for c in LETTERS] + ["[CLS]", "[SEP]", "[MASK]"]))


def _selection(n: int = 40) -> list[str]:
    return [t for t, _ in make_texts(n) if not HELD_OUT & set(t.split())]


def _pieces_model(folder: Path, seed: int = 0) -> Path:
    """A tiny BERT whose WordPiece vocabulary has ## continuations and [CLS]/[SEP] at the end."""
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import AutoModelForSequenceClassification, PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(PIECES_VOCAB)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    core.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    config = tiny_config("bert")
    config.vocab_size = len(PIECES_VOCAB)
    config.initializer_range = 0.2  # large weights: a wrong row or id moves the logits visibly
    torch.manual_seed(seed)
    AutoModelForSequenceClassification.from_config(config).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


@pytest.fixture(scope="module")
def pieces_dir(tmp_path_factory) -> Path:
    return _pieces_model(tmp_path_factory.mktemp("pieces"))


def _load(folder: Path):
    return load_classifier(str(folder)), load_tokenizer(str(folder))


def test_selection_texts_keep_their_tokens_and_logits(pieces_dir):
    model, tok = _load(pieces_dir)
    texts = _selection()
    keep = kept_token_ids(tok, texts, VocabConfig(keep_characters=False))
    trimmed, new_tok, report = trim_vocabulary(model, tok, keep)
    assert report.tokens_before == len(PIECES_VOCAB) and report.tokens_after == len(keep) < len(PIECES_VOCAB)
    assert not HELD_OUT & set(new_tok.get_vocab())
    old_ids, new_ids = encode(tok, texts, 64), encode(new_tok, texts, 64)
    assert new_ids == [[report.old_to_new[i] for i in row] for row in old_ids]
    assert new_ids[0][0] == new_tok.cls_token_id == report.old_to_new[tok.cls_token_id] != tok.cls_token_id
    assert check_identical_tokenisation(tok, new_tok, report.old_to_new, texts, 64) == {
        "texts": len(texts), "identical": len(texts), "first_mismatch": None}
    assert max_logit_difference(model, trimmed, old_ids, new_ids, tok.pad_token_id) < 1e-6
    # A held-out word is not kept: the check finds exactly that text.
    changed = check_identical_tokenisation(tok, new_tok, report.old_to_new, texts[:3] + ["a brilliant film"], 64)
    assert changed == {"texts": 4, "identical": 3, "first_mismatch": 3}


def test_embedding_rows_shrink_to_the_kept_rows_and_the_input_is_untouched(pieces_dir):
    model, tok = _load(pieces_dir)
    before = model.get_input_embeddings().weight.detach().clone()
    keep = kept_token_ids(tok, _selection(), VocabConfig(keep_characters=False))
    trimmed, _, report = trim_vocabulary(model, tok, keep)
    weight = trimmed.get_input_embeddings().weight
    assert weight.shape == (len(keep), 64) and trimmed.config.vocab_size == len(keep)
    assert torch.equal(weight, before[keep])
    assert torch.equal(model.get_input_embeddings().weight, before) and model.config.vocab_size == len(PIECES_VOCAB)
    assert report.embedding_bytes_before - report.embedding_bytes_after == (len(PIECES_VOCAB) - len(keep)) * 64 * 4


def test_unseen_word_splits_into_kept_character_pieces(pieces_dir):
    model, tok = _load(pieces_dir)
    texts = ["good film", "a dull plot"]
    assert tok.tokenize("brilliant") == ["brilliant"]
    _, with_chars, _ = trim_vocabulary(model, tok, kept_token_ids(tok, texts, VocabConfig()))
    assert with_chars.tokenize("brilliant") == ["b"] + [f"##{c}" for c in "rilliant"]
    _, without, _ = trim_vocabulary(model, tok, kept_token_ids(tok, texts, VocabConfig(keep_characters=False)))
    assert without.tokenize("brilliant") == ["[UNK]"]


def test_extra_tokens_are_the_lowest_unused_ids_and_max_vocab_is_enforced(pieces_dir):
    _, tok = _load(pieces_dir)
    texts = ["good film"]
    base = kept_token_ids(tok, texts, VocabConfig(keep_characters=False))
    more = kept_token_ids(tok, texts, VocabConfig(keep_characters=False, extra_tokens=3))
    unused = sorted(set(range(len(PIECES_VOCAB))) - set(base))
    assert sorted(set(more) - set(base)) == unused[:3]
    longer = texts + ["the story was tired"]
    size = len(kept_token_ids(tok, longer, VocabConfig(keep_characters=False)))
    assert size > 8
    with pytest.raises(ConfigError, match=rf"max_vocab: {size} tokens would be kept .* above max_vocab=8"):
        kept_token_ids(tok, longer, VocabConfig(keep_characters=False, max_vocab=8))


def test_trimmed_folder_reloads_with_auto_classes_and_keeps_pad_id_and_layout(pieces_dir, tmp_path):
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    model, tok = _load(pieces_dir)
    layout = {"head_dim": 16, "heads": [4] * 4, "ffn": [128] * 4, "source_layers": [0, 1, 2, 3]}
    texts = _selection()
    trimmed, new_tok, report = trim_vocabulary(model, tok, kept_token_ids(tok, texts, VocabConfig()))
    save_classifier(trimmed, new_tok, tmp_path / "m", layout=layout)
    reloaded_tok = AutoTokenizer.from_pretrained(tmp_path / "m")
    reloaded = AutoModelForSequenceClassification.from_pretrained(tmp_path / "m").eval()
    assert reloaded_tok.pad_token_id == tok.pad_token_id == 0 and len(reloaded_tok) == report.tokens_after
    assert reloaded_tok.sep_token_id == report.old_to_new[tok.sep_token_id]
    assert encode(reloaded_tok, texts, 64) == encode(new_tok, texts, 64)
    assert json.loads((tmp_path / "m" / "config.json").read_text())["edgekd_layout"] == layout
    assert max_logit_difference(model, reloaded, encode(tok, texts, 64), encode(reloaded_tok, texts, 64), 0) < 1e-6


@pytest.mark.parametrize("kind", ["BPE", "Unigram"])
def test_non_wordpiece_tokenizer_is_refused(tiny_bert_dir, kind):
    from tokenizers import Tokenizer, models
    from transformers import PreTrainedTokenizerFast

    tokens = ["<unk>", "<pad>", "good", "film"]
    core = Tokenizer(models.BPE({t: i for i, t in enumerate(tokens)}, [], unk_token="<unk>") if kind == "BPE"
                     else models.Unigram([(t, -1.0) for t in tokens], unk_id=0))
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="<unk>", pad_token="<pad>")
    with pytest.raises(ConfigError, match=f"model type is {kind}; only WordPiece tokenizers"):
        kept_token_ids(tok, ["good film"], VocabConfig())
    with pytest.raises(ConfigError, match=f"model type is {kind}; only WordPiece tokenizers"):
        trim_vocabulary(load_classifier(str(tiny_bert_dir)), tok, [0, 1, 2])


def test_a_language_model_head_is_refused(tiny_bert_dir):
    from transformers import BertForMaskedLM

    tok = load_tokenizer(str(tiny_bert_dir))
    with pytest.raises(ConfigError, match="BertForMaskedLM has an output layer over the vocabulary"):
        trim_vocabulary(BertForMaskedLM(tiny_config("bert")), tok, kept_token_ids(tok, ["good"], VocabConfig()))


def _context(tmp_path: Path, model_dir: Path, test_texts: list[str]) -> StageContext:
    selection = _selection(60)
    half = len(selection) // 2
    splits = Splits(["fresh", "rotten"], Split(selection[:half], [0] * half),
                    Split(selection[half:], [1] * (len(selection) - half)), Split(test_texts, [0] * len(test_texts)))
    save_splits(splits, tmp_path / "data")
    student = Artifact("student", "hf-model", model_dir, role="student", source="pruned", precision="fp32",
                       runtime="pytorch", tokenizer=model_dir, pad_id=0, task="text-classification")
    (tmp_path / "out").mkdir()
    return StageContext(settings={"max_length": 64}, out=tmp_path / "out", data_dir=tmp_path / "data",
                        artifacts={"student": student})


def test_stage_selects_from_train_and_validation_only_and_reports_the_test_split(tmp_path):
    from edgekd.vocab.stage import run

    model_dir = make_tiny_model_dir(tmp_path / "student", "bert", initializer_range=0.2)
    ctx = _context(tmp_path, model_dir, ["a brilliant film 1", "the plot was dull 2", "superb 3", "good 4"])
    run(VocabConfig(), ctx)
    out = ctx.outputs["student"]
    new_tok = load_tokenizer(str(out.tokenizer))
    assert "brilliant" not in new_tok.get_vocab() and "superb" not in new_tok.get_vocab()
    assert {"dull", "plot", "good"} <= set(new_tok.get_vocab())
    m = ctx.metrics
    assert m["identical_share"] == {"train": 1.0, "validation": 1.0, "test": 0.5} and m["test_texts_changed"] == 2
    assert m["tokens_after"] == len(new_tok) < m["tokens_before"] and m["logits_max_abs_diff"] < 1e-6
    assert (out.path, out.role, out.pad_id, out.precision) == (ctx.out / "model", "student", 0, "fp32")
    assert load_classifier(str(out.path)).config.vocab_size == m["tokens_after"]
    assert "tokens," in VocabConfig.summary(m) and "50.0%" in VocabConfig.summary(m)


def test_stage_needs_unlabelled_texts_to_select_from_them(tmp_path, tiny_bert_dir):
    from edgekd.errors import DataError
    from edgekd.vocab.stage import run

    ctx = _context(tmp_path, tiny_bert_dir, ["good 1"])
    with pytest.raises(DataError, match="vocab texts: this run's data has no unlabelled texts"):
        run(VocabConfig(texts=["unlabelled"]), ctx)


def test_pipeline_order_accepts_vocab_after_distill_only():
    from edgekd.config import validate_pipeline

    stages = [{"kind": "teacher"}, {"kind": "prune"}, {"kind": "distill"}, {"kind": "vocab"}, {"kind": "export"}]
    assert [s.kind for s in validate_pipeline({"stages": stages}).stages][3] == "vocab"
    with pytest.raises(ConfigError, match=r"stage 3 \(vocab\) needs student"):
        validate_pipeline({"stages": [stages[0], stages[1], stages[3], stages[2]]})
    with pytest.raises(ConfigError, match="test"):
        validate_pipeline({"stages": stages[:3] + [{"kind": "vocab", "texts": ["test"]}]})


def test_bench_inputs_follow_each_tokenizer_on_the_same_texts_and_rows(pieces_dir, tmp_path):
    from edgekd.bench.inputs import load_inputs, per_tokenizer

    model, tok = _load(pieces_dir)
    texts = _selection()
    _, new_tok, report = trim_vocabulary(model, tok, kept_token_ids(tok, texts, VocabConfig()))
    new_tok.save_pretrained(tmp_path / "trimmed")
    old_json, new_json = pieces_dir / "tokenizer.json", tmp_path / "trimmed" / "tokenizer.json"
    per = per_tokenizer([old_json, new_json, old_json], texts, [0] * len(texts), 64, 16, 10, 3, tmp_path, "t")
    assert per[old_json].npz.name == "inputs.npz" and per[new_json].npz.name == "inputs-2.npz"
    old, new = load_inputs(str(per[old_json].npz)), load_inputs(str(per[new_json].npz))
    assert np.array_equal(old["sample"], new["sample"]) and len(old["rows"]) == len(new["rows"]) == len(texts)
    assert [[report.old_to_new[i] for i in r.tolist()] for r in old["rows"]] == [r.tolist() for r in new["rows"]]
    assert old["rows"][0].tolist() != new["rows"][0].tolist()  # [CLS] moved: the ids really differ


def test_distillation_refuses_a_student_whose_vocabulary_was_trimmed_before_it(pieces_dir):
    """The teacher reads the student's ids: with different numbering it would read the wrong rows."""
    from edgekd.distill.core import check_same_tokenizer

    model, tok = _load(pieces_dir)
    _, trimmed_tok, _ = trim_vocabulary(model, tok, kept_token_ids(tok, _selection(), VocabConfig()))
    check_same_tokenizer(tok, tok)
    with pytest.raises(ConfigError, match="number their tokens differently; trim the vocabulary after distillation"):
        check_same_tokenizer(tok, trimmed_tok)
