"""Shared fixtures: tiny randomly initialised encoders with a real tokenizer, and tiny labelled data.

Nothing here touches the network: models are built from configs, the tokenizer from a word list.
"""

import csv
import random
from pathlib import Path

import pytest

POSITIVE = "good great superb moving fresh witty charming delightful brilliant warm".split()
NEGATIVE = "bad dull boring tired rotten flat clumsy awful bland tedious".split()
NEUTRAL = "the film movie story plot actor scene director script a an is was it this that".split()
SPECIAL = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "<s>", "</s>"]
VOCAB = list(dict.fromkeys(SPECIAL + POSITIVE + NEGATIVE + NEUTRAL + list("abcdefghijklmnopqrstuvwxyz.,!0123456789")))


def make_texts(n: int, seed: int = 0) -> list[tuple[str, str]]:
    """Short reviews whose label follows their sentiment words (learnable, with noise)."""
    rng = random.Random(seed)
    rows = []
    for i in range(n):
        label = rng.choice(["fresh", "rotten"])
        words = POSITIVE if label == "fresh" else NEGATIVE
        text = rng.sample(NEUTRAL, rng.randint(2, 8)) + rng.sample(words, rng.randint(1, 3))
        rng.shuffle(text)
        rows.append((" ".join(text) + f" {i}", label))
    return rows


def build_tokenizer(folder: Path):
    from transformers import BertTokenizerFast

    folder.mkdir(parents=True, exist_ok=True)
    vocab = folder / "vocab.txt"
    vocab.write_text("\n".join(VOCAB) + "\n")
    tok = BertTokenizerFast(vocab_file=str(vocab), do_lower_case=True)
    tok.model_max_length = 64
    return tok


def tiny_config(arch: str, num_labels: int = 2):
    from transformers import BertConfig, DistilBertConfig, RobertaConfig

    vocab = len(VOCAB)
    common = dict(vocab_size=vocab, num_labels=num_labels, max_position_embeddings=80)
    if arch == "bert":
        return BertConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128, **common)
    if arch == "roberta":
        return RobertaConfig(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128,
                             pad_token_id=0, bos_token_id=2, eos_token_id=3, type_vocab_size=1, **common)
    if arch == "distilbert":
        return DistilBertConfig(dim=64, n_layers=4, n_heads=4, hidden_dim=128, pad_token_id=0, **common)
    raise ValueError(arch)


def make_tiny_model_dir(folder: Path, arch: str = "bert", seed: int = 0) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(tiny_config(arch))
    model.save_pretrained(folder)
    build_tokenizer(folder).save_pretrained(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"), "bert")


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data") / "reviews.csv"
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts(400))
    return path


@pytest.fixture
def tokenizer(tmp_path):
    return build_tokenizer(tmp_path / "tok")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and tests then don't fight over the cores."""
    import torch

    torch.set_num_threads(1)
