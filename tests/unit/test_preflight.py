"""Up-front checks: a bad model folder, setting or label set stops before any stage runs.

Every case builds a tiny model folder (or breaks a copy of one) and calls check_pipeline directly.
"""

import csv
import logging
import shutil

import pytest
import torch

from edgekd.config import validate_pipeline
from edgekd.errors import AssetError, ConfigError, EdgekdError
from edgekd.models import load_classifier, load_tokenizer
from edgekd.preflight import check_pipeline, usable_positions
from tests.conftest import VOCAB, build_tokenizer, make_texts, tiny_config

FULL = [{"kind": "teacher"}, {"kind": "prune", "layer_ratio": 0.5}, {"kind": "distill"}, {"kind": "export"}]


def _save_model(folder, arch="bert", labels=None, headless=False, **overrides):
    """A tiny random model folder with the fixture tokenizer; ``labels`` become its id2label."""
    from transformers import AutoModel, AutoModelForSequenceClassification

    config = tiny_config(arch, num_labels=len(labels) if labels else 2)
    if labels:
        config.id2label, config.label2id = dict(enumerate(labels)), {name: i for i, name in enumerate(labels)}
    for key, value in overrides.items():
        setattr(config, key, value)
    torch.manual_seed(0)
    (AutoModel if headless else AutoModelForSequenceClassification).from_config(config).save_pretrained(folder)
    build_tokenizer(folder).save_pretrained(folder)
    return folder


def _write_csv(path, rows):
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(rows)
    return path


def _config(model_dir, data, stages=FULL, **model):
    return validate_pipeline({"name": "t", "model": {"source": str(model_dir), "max_length": 32, **model},
                              "data": {"source": str(data)}, "stages": stages})


def _error(error_type, config) -> str:
    with pytest.raises(error_type) as info:
        check_pipeline(config)
    return str(info.value)


@pytest.fixture(scope="module")
def bert_dir(tmp_path_factory):
    return _save_model(tmp_path_factory.mktemp("bert") / "model")


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    return _write_csv(tmp_path_factory.mktemp("data") / "reviews.csv", make_texts(60))


@pytest.fixture
def copy_of(tmp_path, bert_dir):
    def copy():
        return shutil.copytree(bert_dir, tmp_path / "copy")
    return copy


def test_a_good_folder_and_settings_pass(bert_dir, data):
    assert check_pipeline(_config(bert_dir, data)) is None


def test_hub_models_skip_the_folder_checks(data):
    # nothing is downloaded: hub files are checked when the teacher stage fetches them
    assert check_pipeline(_config("hub:nobody/no-such-model", data)) is None


# --- weights ---------------------------------------------------------------------------------------

def test_truncated_safetensors(copy_of, data):
    folder = copy_of()
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    message = _error(AssetError, _config(folder, data))
    assert str(weights) in message and "not a readable safetensors file" in message


def test_random_bytes_as_safetensors(copy_of, data):
    folder = copy_of()
    (folder / "model.safetensors").write_bytes(bytes(range(256)) * 8)
    message = _error(AssetError, _config(folder, data))
    assert "model.safetensors" in message and "not a readable safetensors file" in message


def test_no_weights_file(copy_of, data):
    folder = copy_of()
    (folder / "model.safetensors").unlink()
    message = _error(AssetError, _config(folder, data))
    assert str(folder) in message and "no weights file" in message and "model.safetensors" in message


def test_pickle_only_is_refused_unless_allowed(tmp_path, data):
    from transformers import AutoModelForSequenceClassification

    folder = tmp_path / "pickled"
    model = AutoModelForSequenceClassification.from_config(tiny_config("bert"))
    # Written by hand: transformers 5 ignores save_pretrained(safe_serialization=False).
    model.config.save_pretrained(folder)
    torch.save(model.state_dict(), folder / "pytorch_model.bin")
    build_tokenizer(folder).save_pretrained(folder)
    assert not (folder / "model.safetensors").exists()
    message = _error(AssetError, _config(folder, data))
    assert "pytorch_model.bin" in message and "pickle" in message and "model.allow_pickle: true" in message
    assert check_pipeline(_config(folder, data, allow_pickle=True)) is None


# --- tokenizer --------------------------------------------------------------------------------------

def test_no_tokenizer_files(copy_of, data):
    folder = copy_of()
    for name in ("tokenizer.json", "vocab.txt", "tokenizer_config.json", "special_tokens_map.json"):
        (folder / name).unlink(missing_ok=True)
    message = _error(AssetError, _config(folder, data))
    assert str(folder) in message and "no tokenizer files" in message and "tokenizer.json" in message
    with pytest.raises(AssetError, match="no tokenizer files"):
        load_tokenizer(str(folder))


def test_corrupt_tokenizer_json(copy_of, data):
    folder = copy_of()
    (folder / "vocab.txt").unlink(missing_ok=True)
    (folder / "tokenizer.json").write_text('{"version": "1.0", "model": ')
    message = _error(AssetError, _config(folder, data))
    assert str(folder) in message and "tokenizer (tokenizer.json" in message and "cannot be loaded" in message


# --- max_length -------------------------------------------------------------------------------------

def test_max_length_beyond_the_position_table(bert_dir, data):
    assert check_pipeline(_config(bert_dir, data, max_length=80)) is None
    message = _error(ConfigError, _config(bert_dir, data, max_length=81))
    assert "model.max_length" in message and "81" in message and "max_position_embeddings 80" in message
    assert str(bert_dir / "config.json") in message and "80 or less" in message


def test_roberta_padding_offset_counts(tmp_path, data):
    folder = _save_model(tmp_path / "roberta", "roberta", pad_token_id=1)  # as in real RoBERTa checkpoints
    assert check_pipeline(_config(folder, data, max_length=78)) is None
    message = _error(ConfigError, _config(folder, data, max_length=79))
    assert "model.max_length" in message and "78 usable after the padding offset" in message and "78 or less" in message


def test_usable_positions_per_family():
    from transformers import MPNetConfig

    assert usable_positions(tiny_config("bert")) == 80
    assert usable_positions(tiny_config("distilbert")) == 80
    assert usable_positions(tiny_config("roberta")) == 79  # the fixture puts [PAD] at id 0
    assert usable_positions(MPNetConfig(max_position_embeddings=514, pad_token_id=0)) == 512  # padding_idx is always 1


# --- layers -----------------------------------------------------------------------------------------

def test_keep_layers_out_of_range(bert_dir, data):
    stages = [{"kind": "teacher"}, {"kind": "prune", "keep_layers": [0, 2, 7]}]
    message = _error(ConfigError, _config(bert_dir, data, stages))
    assert "prune.keep_layers" in message and "[7]" in message and "4 layers (0..3)" in message


@pytest.mark.parametrize("layer_map, needles", [
    ({2: 1}, ["student layer 2", "keeps 2 layers (0..1)"]),
    ({-1: 0}, ["student layer -1"]),
    ({0: 4}, ["teacher layer 4", "has 4 layers (0..3)"]),
])
def test_layer_map_out_of_range(bert_dir, data, layer_map, needles):
    stages = [{"kind": "teacher"}, {"kind": "prune", "layer_ratio": 0.5}, {"kind": "distill", "layer_map": layer_map}]
    message = _error(ConfigError, _config(bert_dir, data, stages))
    assert "distill.layer_map" in message and all(n in message for n in needles), message


def test_layer_map_checked_against_keep_layers(bert_dir, data):
    stages = [{"kind": "teacher"}, {"kind": "prune", "keep_layers": [0, 1, 3]},
              {"kind": "distill", "layer_map": {0: 0, 1: 1, 2: 3}}]
    assert check_pipeline(_config(bert_dir, data, stages)) is None


def test_mpnet_head_pruning_refused_before_training(tmp_path, data):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    folder = tmp_path / "mpnet"
    MPNetForSequenceClassification(MPNetConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    build_tokenizer(folder).save_pretrained(folder)
    stages = [{"kind": "teacher"}, {"kind": "prune", "head_ratio": 0.5}]
    message = _error(ConfigError, _config(folder, data, stages))
    assert "prune.head_ratio" in message and "MPNet" in message and "head_ratio: 0" in message


def test_unsupported_family_refused_before_training_when_pruning(tmp_path, data):
    from transformers import AlbertConfig, AlbertForSequenceClassification

    folder = tmp_path / "albert"
    AlbertForSequenceClassification(AlbertConfig(vocab_size=len(VOCAB), embedding_size=16, hidden_size=32,
                                                 num_hidden_layers=2, num_attention_heads=2,
                                                 intermediate_size=64)).save_pretrained(folder)
    build_tokenizer(folder).save_pretrained(folder)
    message = _error(EdgekdError, _config(folder, data, [{"kind": "teacher"}, {"kind": "prune"}]))
    assert "'albert'" in message and "not supported for pruning" in message
    assert check_pipeline(_config(folder, data, [{"kind": "teacher"}])) is None  # fine-tuning alone works


# --- labels with finetune: false ----------------------------------------------------------------------

AS_GIVEN = [{"kind": "teacher", "finetune": False}]


def test_as_given_with_matching_labels_passes(tmp_path, data):
    folder = _save_model(tmp_path / "m", labels=["fresh", "rotten"])
    assert check_pipeline(_config(folder, data, AS_GIVEN)) is None


def test_as_given_with_labels_in_another_order(tmp_path, data):
    folder = _save_model(tmp_path / "m", labels=["rotten", "fresh"])
    message = _error(ConfigError, _config(folder, data, AS_GIVEN))
    assert "teacher.finetune" in message and "['rotten', 'fresh']" in message and "['fresh', 'rotten']" in message
    assert "another order" in message and str(folder / "config.json") in message


def test_as_given_with_other_label_names(tmp_path, data):
    folder = _save_model(tmp_path / "m", labels=["negative", "positive"])
    message = _error(ConfigError, _config(folder, data, AS_GIVEN))
    assert "teacher.finetune" in message and "['negative', 'positive'] differ from the data's ['fresh', 'rotten']" \
        in message and "rename the data's labels" in message


def test_as_given_with_a_different_number_of_classes(tmp_path, data):
    folder = _save_model(tmp_path / "m", labels=["fresh", "rotten"])
    three = _write_csv(tmp_path / "three.csv", make_texts(60) + [(f"so so {i}", "meh") for i in range(20)])
    message = _error(ConfigError, _config(folder, three, AS_GIVEN))
    assert "teacher.finetune" in message and "has 2 labels" in message and "3 (fresh, meh, rotten)" in message
    # fine-tuning makes a new head instead
    assert check_pipeline(_config(folder, three, [{"kind": "teacher"}])) is None


def test_as_given_with_placeholder_label_names(tmp_path, data):
    folder = _save_model(tmp_path / "m")  # id2label LABEL_0, LABEL_1
    message = _error(ConfigError, _config(folder, data, AS_GIVEN))
    assert "LABEL_0..LABEL_1" in message and "'fresh'" in message and "id2label" in message
    digits = _write_csv(tmp_path / "digits.csv", [(t, "1" if y == "fresh" else "0") for t, y in make_texts(60)])
    assert check_pipeline(_config(folder, digits, AS_GIVEN)) is None  # labels 0, 1 are the indices themselves


def test_as_given_without_a_trained_head(tmp_path, data):
    folder = _save_model(tmp_path / "m", labels=["fresh", "rotten"], headless=True)
    message = _error(ConfigError, _config(folder, data, AS_GIVEN))
    assert "teacher.finetune" in message and "no trained classification head" in message and str(folder) in message


# --- the loader: new heads and attention ---------------------------------------------------------------

def test_loader_makes_a_new_head_for_another_number_of_labels(bert_dir, caplog):
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = load_classifier(str(bert_dir), label_names=["a", "b", "c"])
    assert model.classifier.out_features == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    assert any("new classification head" in r.getMessage() and "['a', 'b', 'c']" in r.getMessage()
               for r in caplog.records)


def test_loader_makes_a_new_head_for_other_label_names(tmp_path, caplog):
    folder = _save_model(tmp_path / "m", labels=["negative", "positive"])
    saved = load_classifier(str(folder)).classifier.weight.detach().clone()
    assert torch.equal(load_classifier(str(folder), ["negative", "positive"]).classifier.weight, saved)
    with caplog.at_level(logging.INFO, logger="edgekd"):
        model = load_classifier(str(folder), label_names=["fresh", "rotten"])
    assert not torch.equal(model.classifier.weight, saved)  # not the old head under new names
    assert any("new classification head" in r.getMessage() for r in caplog.records)


def test_loader_falls_back_to_eager_attention(tmp_path, bert_dir):
    from transformers import MPNetConfig, MPNetForSequenceClassification

    # MPNet has no SDPA attention on transformers 4.57 or 5.x (ELECTRA gained it in 5.x).
    folder = tmp_path / "mpnet"
    MPNetForSequenceClassification(MPNetConfig(vocab_size=len(VOCAB), hidden_size=32, num_hidden_layers=2,
                                               num_attention_heads=2, intermediate_size=64)).save_pretrained(folder)
    assert load_classifier(str(folder)).config._attn_implementation == "eager"
    assert load_classifier(str(bert_dir)).config._attn_implementation == "sdpa"


def test_loader_makes_a_new_head_on_a_pruned_layout(tmp_path, bert_dir):
    from edgekd.data.tokenize import pad_batch
    from edgekd.models import save_classifier
    from edgekd.prune.config import PruneConfig
    from edgekd.prune.core import prune

    tokenizer = build_tokenizer(tmp_path / "tok")
    texts = [t for t, _ in make_texts(8)]
    batch = pad_batch(tokenizer(texts, truncation=True, max_length=32)["input_ids"], tokenizer.pad_token_id)
    student, report = prune(load_classifier(str(bert_dir)), PruneConfig(head_ratio=0.5, ffn_ratio=0.5),
                            [(batch, torch.tensor([0, 1] * 4))])
    save_classifier(student, tokenizer, tmp_path / "pruned", layout=report.layout)
    model = load_classifier(str(tmp_path / "pruned"), label_names=["a", "b", "c"])
    assert model.classifier.out_features == 3 and model.config.id2label == {0: "a", 1: "b", 2: "c"}
    # the encoder's pruned weights are kept
    kept = load_classifier(str(tmp_path / "pruned"))
    assert torch.equal(model.bert.encoder.layer[0].attention.self.query.weight,
                       kept.bert.encoder.layer[0].attention.self.query.weight)
    assert model(**batch).logits.shape == (8, 3)
