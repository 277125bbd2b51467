"""Shared fixtures: tiny randomly initialised encoders with a real tokenizer, and tiny labelled data.

Nothing here touches the network: models are built from configs, the tokenizer from a word list.
"""

import csv
import importlib.util
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
    """An uncased WordPiece tokenizer over VOCAB, saved into ``folder`` and returned.

    Built from a ``tokenizers.Tokenizer`` object because transformers 5 ignores
    ``BertTokenizerFast(vocab_file=...)`` (every word becomes [UNK]); this way 4.x and 5.x agree.
    """
    from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {token: i for i, token in enumerate(VOCAB)}
    core = Tokenizer(models.WordPiece(vocab, unk_token="[UNK]"))
    core.normalizer = normalizers.BertNormalizer(lowercase=True)
    core.pre_tokenizer = pre_tokenizers.BertPreTokenizer()
    core.post_processor = processors.TemplateProcessing(
        single="[CLS] $A [SEP]", pair="[CLS] $A [SEP] $B:1 [SEP]:1",
        special_tokens=[("[CLS]", vocab["[CLS]"]), ("[SEP]", vocab["[SEP]"])],
    )
    core.decoder = decoders.WordPiece()
    tok = PreTrainedTokenizerFast(tokenizer_object=core, unk_token="[UNK]", pad_token="[PAD]", cls_token="[CLS]",
                                  sep_token="[SEP]", mask_token="[MASK]", model_max_length=64)
    folder.mkdir(parents=True, exist_ok=True)
    tok.save_pretrained(folder)
    return tok


def tiny_config(arch: str, num_labels: int = 2):
    from transformers import (BertConfig, DistilBertConfig, ElectraConfig, MPNetConfig, RobertaConfig,
                              XLMRobertaConfig)

    vocab = len(VOCAB)
    common = dict(vocab_size=vocab, num_labels=num_labels, max_position_embeddings=80)
    layers = dict(hidden_size=64, num_hidden_layers=4, num_attention_heads=4, intermediate_size=128)
    # RoBERTa-style models offset positions by pad_token_id, and the fixture vocab puts [PAD] at 0.
    roberta_ids = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3)
    if arch == "bert":
        return BertConfig(**layers, **common)
    if arch == "roberta":
        return RobertaConfig(**layers, **roberta_ids, type_vocab_size=1, **common)
    if arch == "xlm-roberta":
        return XLMRobertaConfig(**layers, **roberta_ids, type_vocab_size=1, **common)
    if arch == "electra":
        return ElectraConfig(**layers, embedding_size=64, **common)
    if arch == "mpnet":
        return MPNetConfig(**layers, **roberta_ids, **common)
    if arch == "distilbert":
        return DistilBertConfig(dim=64, n_layers=4, n_heads=4, hidden_dim=128, pad_token_id=0, **common)
    raise ValueError(arch)


def make_tiny_model_dir(folder: Path, arch: str = "bert", seed: int = 0, **config_overrides) -> Path:
    """A saved tiny random classifier with the fixture tokenizer; ``config_overrides`` (e.g.
    ``initializer_range=0.2``) are set on its config before the weights are initialised."""
    import torch
    from transformers import AutoModelForSequenceClassification

    config = tiny_config(arch)
    for key, value in config_overrides.items():
        setattr(config, key, value)
    torch.manual_seed(seed)
    model = AutoModelForSequenceClassification.from_config(config)
    model.save_pretrained(folder)
    build_tokenizer(folder)
    return folder


@pytest.fixture(scope="session")
def tiny_bert_dir(tmp_path_factory) -> Path:
    return make_tiny_model_dir(tmp_path_factory.mktemp("tiny-bert"), "bert")


def write_reviews_csv(path: Path, n: int) -> Path:
    """``n`` rows of make_texts as a text,label CSV."""
    with open(path, "w", newline="") as f:
        writer = csv.writer(f)
        writer.writerow(["text", "label"])
        writer.writerows(make_texts(n))
    return path


@pytest.fixture(scope="session")
def tiny_csv(tmp_path_factory) -> Path:
    return write_reviews_csv(tmp_path_factory.mktemp("data") / "reviews.csv", 400)


@pytest.fixture
def tokenizer(tmp_path):
    return build_tokenizer(tmp_path / "tok")


@pytest.fixture(scope="session", autouse=True)
def _one_thread():
    """Tiny models run fastest on one thread, and tests then don't fight over the cores."""
    import torch

    torch.set_num_threads(1)


def load_benchmark_script(name: str):
    """A benchmarks/<name>.py script as a module (the scripts are not part of the package)."""
    path = Path(__file__).resolve().parents[1] / "benchmarks" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module
