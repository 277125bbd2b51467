"""Teacher-labelled extra data: embedding-neighbour and mask augmentation, the mixed-batch loss, distill with it."""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from pydantic import ValidationError

from edgekd.data import make_splits
from edgekd.distill import core as distill_core
from edgekd.distill.augment import (NO_LABEL, ExtraExamples, augment, build_extra_examples, extra_data_metrics,
                                    mask_tokens, mixed_soft_loss, nearest_neighbours, replace_with_neighbours,
                                    token_classes, whole_word_positions)
from edgekd.distill.config import DistillConfig, ExtraDataConfig
from edgekd.distill.losses import SoftTargetLoss
from edgekd.errors import ConfigError
from edgekd.models import load_classifier
from tests.conftest import build_tokenizer, make_texts

WORDS = "the film good great superb fine bad dull walk run".split()
PIECES = ["##ing", "##ed"]
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
VOCAB = SPECIAL + WORDS + PIECES + list(".,!0123456789")


def _wordpiece_tokenizer(folder):
    """A WordPiece tokenizer whose vocabulary has ## pieces (the shared fixture's has none)."""
    from tokenizers import Tokenizer, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {t: i for i, t in enumerate(VOCAB)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])])
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]")
    tok.save_pretrained(folder)
    return PreTrainedTokenizerFast.from_pretrained(folder)


def _embeddings() -> torch.Tensor:
    """[V, 4] embeddings: good/great/superb/fine close together; the ## piece and the specials sit *on*
    "good", so a neighbour search that let them in would pick them first."""
    emb = torch.randn(len(VOCAB), 4, generator=torch.Generator().manual_seed(0))
    base = torch.tensor([1.0, 0.0, 0.0, 0.0])
    for token, noise in [("good", 0.0), ("great", 0.05), ("superb", 0.1), ("fine", 0.2)]:
        emb[VOCAB.index(token)] = base + noise * torch.tensor([0.0, 1.0, 0.0, 0.0])
    for token in ["##ing", "[MASK]", "[UNK]", "[CLS]"]:
        emb[VOCAB.index(token)] = base
    return emb


@pytest.fixture(scope="module")
def wp(tmp_path_factory):
    return _wordpiece_tokenizer(tmp_path_factory.mktemp("wp"))


def _ids(tok, text):
    return tok(text)["input_ids"]


def test_whole_words_exclude_pieces_specials_and_punctuation(wp):
    classes = token_classes(wp, len(VOCAB))
    ids = _ids(wp, "the walking film , good 7")  # walk ##ing: two pieces of one word
    tokens = wp.convert_ids_to_tokens(ids)
    assert tokens == ["[CLS]", "the", "walk", "##ing", "film", ",", "good", "7", "[SEP]"]
    assert [tokens[i] for i in whole_word_positions(ids, classes)] == ["the", "film", "good"]
    assert not classes.whole_word[[VOCAB.index(t) for t in SPECIAL + PIECES + [","]]].any()


def test_neighbours_are_nearest_whole_words_only(wp):
    classes = token_classes(wp, len(VOCAB))
    good = VOCAB.index("good")
    table = nearest_neighbours(_embeddings(), [good, VOCAB.index("bad")], classes.whole_word, k=3, chunk=1)
    assert table.table.shape == (2, 3)  # [V_used, k]
    assert [VOCAB[i] for i in table.of(good)] == ["great", "superb", "fine"]
    assert all(classes.whole_word[i] for i in table.table.ravel())


def test_neighbour_replacement_changes_the_fraction_of_whole_words_and_is_seeded(wp):
    classes = token_classes(wp, len(VOCAB))
    ids = _ids(wp, "the good film walking was great , superb fine dull bad run")
    positions = whole_word_positions(ids, classes)
    table = nearest_neighbours(_embeddings(), sorted({ids[i] for i in positions}), classes.whole_word, k=2)
    out = replace_with_neighbours(ids, classes, table, 0.5, random.Random(0))
    changed = [i for i, (a, b) in enumerate(zip(ids, out)) if a != b]
    assert len(changed) == round(0.5 * len(positions)) and set(changed) <= set(positions)
    assert all(out[i] in table.of(ids[i]) for i in changed)
    assert out == replace_with_neighbours(ids, classes, table, 0.5, random.Random(0))
    others = [replace_with_neighbours(ids, classes, table, 0.5, random.Random(s)) for s in range(1, 4)]
    assert any(o != out for o in others)


def test_mask_and_drop_touch_only_the_fraction_of_non_special_tokens(wp):
    classes = token_classes(wp, len(VOCAB))
    ids = _ids(wp, "the good film walking was great , superb fine")  # 10 non-special tokens
    mask_id = wp.mask_token_id
    masked = mask_tokens(ids, classes, 0.3, mask_id, random.Random(0))
    assert masked.count(mask_id) == 3 and len(masked) == len(ids)
    assert masked[0] == ids[0] and masked[-1] == ids[-1]  # [CLS] and [SEP] kept
    assert all(m in (mask_id, t) for m, t in zip(masked, ids))
    dropped = mask_tokens(ids, classes, 0.3, mask_id, random.Random(0), drop=True)
    assert len(dropped) == len(ids) - 3 and dropped[0] == ids[0] and dropped[-1] == ids[-1]


def test_augment_makes_copies_per_sentence_seeded_and_capped(wp):
    sentences = [_ids(wp, t) for t in ["the good film", "bad dull run", "great superb walk fine"]]
    emb = _embeddings()
    for method in ("neighbours", "mask", "both"):
        cfg = ExtraDataConfig(augment_copies=2, augment_method=method, augment_fraction=0.5, neighbours=2)
        out = augment(sentences, wp, emb, cfg, seed=0)
        assert len(out) == 6 and all(o not in sentences for o in out)
        assert out == augment(sentences, wp, emb, cfg, seed=0)
        assert out != augment(sentences, wp, emb, cfg, seed=1)
        assert augment(sentences, wp, emb, cfg, seed=0, limit=4) == out[:4]
    masked = augment(sentences, wp, emb, ExtraDataConfig(augment_copies=1, augment_method="mask"), seed=0)
    assert all(o.count(wp.mask_token_id) == 1 for o in masked)


def test_extra_examples_put_the_pool_first_and_respect_max_extra(tiny_bert_dir, tokenizer):
    teacher = load_classifier(str(tiny_bert_dir))
    train_ids = tokenizer(["good film", "bad film", "the dull plot"])["input_ids"]
    pool = ["a story", "the actor", "this scene"]
    cfg = ExtraDataConfig(unlabelled=True, augment_copies=2, max_extra=5)
    extra = build_extra_examples(tokenizer, teacher, pool, train_ids, cfg, seed=0, max_length=16)
    assert extra.kinds == ["unlabelled"] * 3 + ["augmented"] * 2
    assert extra.ids[:3] == tokenizer(pool)["input_ids"]
    assert extra.counts() == {"unlabelled": 3, "augmented": 2}
    with pytest.raises(ConfigError, match="data.unlabelled_labels"):
        build_extra_examples(tokenizer, teacher, [], train_ids, cfg, seed=0, max_length=16)


def test_extra_metrics_count_kinds_and_teacher_labels():
    extra = ExtraExamples(ids=[[1]] * 4, kinds=["unlabelled", "unlabelled", "unlabelled", "augmented"])
    logits = np.array([[2.0, 0.0], [0.0, 1.0], [0.0, 3.0], [1.0, 0.0]])
    m = extra_data_metrics(extra, logits, n_train=12, label_names=["fresh", "rotten"])
    assert m["examples"] == {"unlabelled": 3, "augmented": 1} and m["total"] == 4 and m["extra_share"] == 0.25
    assert m["teacher_labels"] == {"unlabelled": {"fresh": 1, "rotten": 2}, "augmented": {"fresh": 1}}


def _kl(student, teacher, t):
    return F.kl_div(F.log_softmax(student / t, -1), F.log_softmax(teacher / t, -1), reduction="batchmean",
                    log_target=True) * t * t


def test_mixed_loss_gives_extra_rows_the_weighted_soft_term_only():
    g = torch.Generator().manual_seed(0)
    s, t = torch.randn(6, 3, generator=g), torch.randn(6, 3, generator=g)
    labels = torch.tensor([0, 2, 1, NO_LABEL, NO_LABEL, NO_LABEL])
    soft = SoftTargetLoss(2.0, 0.7)
    all_labelled = mixed_soft_loss(soft, s[:3], t[:3], labels[:3], 2.0, extra_weight=5.0)
    assert torch.allclose(all_labelled, soft(s[:3], t[:3], labels[:3]))
    mixed = mixed_soft_loss(soft, s, t, labels, 2.0, extra_weight=0.5)
    expected = (3 * soft(s[:3], t[:3], labels[:3]) + 3 * 0.5 * _kl(s[3:], t[3:], 2.0)) / 6
    assert torch.allclose(mixed, expected)
    # An extra row whose student already matches the teacher adds nothing, whichever class the teacher favours.
    agree = mixed_soft_loss(soft, t[3:], t[3:], labels[3:], 2.0, extra_weight=1.0)
    assert agree.abs() < 1e-6


def test_config_validation():
    with pytest.raises(ValidationError, match="augment_method"):
        ExtraDataConfig(augment_method="synonyms")
    with pytest.raises(ValidationError, match="augment_fraction"):
        ExtraDataConfig(augment_fraction=0.0)
    with pytest.raises(ValidationError, match="weight"):
        DistillConfig(extra_data={"weight": 0})
    with pytest.raises(ValidationError, match="max_extra"):
        DistillConfig(extra_data={"max_extra": 0})
    with pytest.raises(ValidationError, match="Extra inputs are not permitted"):
        DistillConfig(extra_data={"copies": 2})
    assert not DistillConfig().extra_data.enabled
    assert DistillConfig(extra_data={"augment_copies": 1}).extra_data.enabled


def test_preflight_needs_unlabelled_labels_for_the_pool():
    from edgekd.config import validate_pipeline
    from edgekd.preflight import check_pipeline

    config = validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "prune"},
                                           {"kind": "distill", "extra_data": {"unlabelled": True}}]})
    with pytest.raises(ConfigError, match="data.unlabelled_labels"):
        check_pipeline(config)


@pytest.fixture(scope="module")
def tiny(tiny_bert_dir, tmp_path_factory):
    teacher = load_classifier(str(tiny_bert_dir))
    rows = make_texts(80) + [(f"the plot of film {i}", "plot") for i in range(20)]
    splits = make_splits(rows, 0.2, 0.2, seed=0, unlabelled_labels=["plot"])
    return teacher, splits, build_tokenizer(tmp_path_factory.mktemp("tok"))


def test_distill_with_extra_data_trains_on_soft_targets_only(tiny, monkeypatch):
    teacher, splits, tok = tiny
    student = load_classifier(str(teacher.name_or_path))
    seen = {}

    def recording_fit(model, loss_fn, train_ids, train_labels, *args, **kwargs):
        seen.update(loss_fn=loss_fn, ids=train_ids, labels=train_labels)
        return real_fit(model, loss_fn, train_ids, train_labels, *args, **kwargs)

    real_fit = distill_core.fit
    monkeypatch.setattr(distill_core, "fit", recording_fit)
    cfg = DistillConfig(epochs=1, batch_size=16, device="cpu", temperature=2.0,
                        extra_data={"unlabelled": True, "augment_copies": 1, "weight": 0.5})
    result, logits = distill_core.distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))
    n_train, n_extra = len(splits.train), len(splits.unlabelled) + len(splits.train)
    assert logits.shape == (n_train + n_extra, 2) and np.isfinite(logits).all()
    assert result.steps == math.ceil((n_train + n_extra) / 16)
    assert seen["labels"][:n_train] == splits.train.labels and set(seen["labels"][n_train:]) == {NO_LABEL}
    # On a batch of extra examples the loss is exactly weight * T^2 * KL(teacher || student): no CE term, which
    # would need a gold label these rows do not have.
    idx = list(range(n_train, n_train + 8))
    batch = tok.pad({"input_ids": [seen["ids"][i] for i in idx]}, return_tensors="pt")
    batch = {k: batch[k] for k in ("input_ids", "attention_mask")}
    student.train(False)
    with torch.no_grad():
        loss = seen["loss_fn"](student, batch, idx, torch.full((8,), NO_LABEL))
        expected = 0.5 * _kl(student(**batch).logits.float(), torch.from_numpy(logits[idx]), 2.0)
    assert torch.allclose(loss, expected, atol=1e-6)


def test_cached_training_logits_are_extended_with_the_extra_rows(tiny):
    teacher, splits, tok = tiny
    student = load_classifier(str(teacher.name_or_path))
    cached = np.zeros((len(splits.train), 2), dtype=np.float32)
    cfg = DistillConfig(epochs=1, batch_size=32, device="cpu", max_steps=1, extra_data={"unlabelled": True})
    _, logits = distill_core.distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"),
                                     teacher_logits=cached)
    assert logits.shape == (len(splits.train) + len(splits.unlabelled), 2)
    assert (logits[: len(cached)] == 0).all() and (logits[len(cached):] != 0).any()
    with pytest.raises(ValueError, match="teacher_logits has 3 rows"):
        distill_core.distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"),
                             teacher_logits=cached[:3])
