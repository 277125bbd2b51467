"""Every encoder family the README lists goes through every stage, teacher to bundle, on a tiny random model.

One pipeline per family (BERT, RoBERTa, XLM-R, ELECTRA, MPNet, DistilBERT): a few training steps, a
real prune (heads too, except MPNet, whose head pruning is refused), distillation with the hidden-state
and attention terms, ONNX export with its parity gate, dynamic int8 and the bundle, which then runs
in the torch-free runtime.
"""

import importlib.util
import stat
from pathlib import Path

import pytest

from edgekd.config import validate_pipeline
from edgekd.pipeline import run_pipeline
from edgekd.preflight import check_pipeline
from tests.conftest import VOCAB, build_tokenizer, make_texts, write_reviews_csv

RUNTIME = Path(__file__).parents[2] / "deploy" / "edgekd_runtime.py"
SIZE = dict(hidden_size=32, num_hidden_layers=4, num_attention_heads=2, intermediate_size=64)
# The fixture tokenizer puts [PAD] at id 0; RoBERTa-style configs are told so.
ROBERTA_IDS = dict(pad_token_id=0, bos_token_id=2, eos_token_id=3, type_vocab_size=1)


def family_config(family: str, electra_embedding: int = 32):
    import transformers as t

    common = dict(vocab_size=len(VOCAB), max_position_embeddings=80, num_labels=2)
    if family == "bert":
        return t.BertConfig(**SIZE, **common)
    if family == "roberta":
        return t.RobertaConfig(**SIZE, **ROBERTA_IDS, **common)
    if family == "xlm-roberta":
        return t.XLMRobertaConfig(**SIZE, **ROBERTA_IDS, **common)
    if family == "electra":
        return t.ElectraConfig(**SIZE, embedding_size=electra_embedding, **common)
    if family == "mpnet":
        return t.MPNetConfig(**SIZE, pad_token_id=0, **common)
    if family == "distilbert":
        return t.DistilBertConfig(dim=32, n_layers=4, n_heads=2, hidden_dim=64, pad_token_id=0, **common)
    raise ValueError(family)


def _stages(family: str, exporter: str) -> list[dict]:
    train = {"epochs": 1, "batch_size": 16, "max_steps": 3, "learning_rate": 0.002, "patience": 0}
    return [
        {"kind": "teacher", **train},
        {"kind": "prune", "head_ratio": 0.0 if family == "mpnet" else 0.5, "ffn_ratio": 0.5, "layer_ratio": 0.5,
         "calibration_batches": 1, "calibration_batch_size": 8},
        {"kind": "distill", **train, "beta": 1.0, "gamma": 1.0},
        {"kind": "export", "models": ["student"], "exporter": exporter},
        {"kind": "quantize", "models": ["student"], "modes": ["dynamic"], "calibration_examples": 8},
        {"kind": "bundle", "model": "student.int8-dynamic.onnx"},
    ]


@pytest.fixture(scope="module")
def data_csv(tmp_path_factory):
    return write_reviews_csv(tmp_path_factory.mktemp("families-data") / "reviews.csv", 80)


def _model_dir(folder: Path, family: str, **sizes) -> Path:
    import torch
    from transformers import AutoModelForSequenceClassification

    torch.manual_seed(0)
    AutoModelForSequenceClassification.from_config(family_config(family, **sizes)).save_pretrained(folder)
    build_tokenizer(folder).save_pretrained(folder)
    return folder


def _runtime():
    spec = importlib.util.spec_from_file_location("edgekd_runtime_families", RUNTIME)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


# optimum for half the families, torch.onnx for the other half: both exporters see pruned models
@pytest.mark.parametrize("family, exporter", [
    ("bert", "optimum"), ("roberta", "torch"), ("xlm-roberta", "optimum"), ("electra", "torch"),
    ("mpnet", "optimum"), ("distilbert", "torch"),
])
def test_family_runs_every_stage(tmp_path, data_csv, family, exporter):
    _run_every_stage(tmp_path, data_csv, _model_dir(tmp_path / "model", family), family, exporter)


def test_electra_with_narrower_embeddings(tmp_path, data_csv):
    _run_every_stage(tmp_path, data_csv, _model_dir(tmp_path / "model", "electra", electra_embedding=16), "electra",
                     "torch")


def _run_every_stage(tmp_path, data_csv, model_dir, family, exporter):
    config = validate_pipeline({
        "name": family, "seed": 0, "output_dir": str(tmp_path / "runs"),
        "model": {"source": str(model_dir), "max_length": 32},
        "data": {"source": str(data_csv), "validation_fraction": 0.15, "test_fraction": 0.2},
        "stages": _stages(family, exporter),
    })
    check_pipeline(config)
    result = run_pipeline(config)

    assert [(r.kind, r.status) for r in result.stages] == [(s.kind, "ran") for s in config.stages]
    from transformers import AutoConfig

    student = AutoConfig.from_pretrained(str(result.artifacts["student"].path))
    assert student.model_type == family
    layout = student.edgekd_layout
    assert len(layout["source_layers"]) == 2  # half of the 4 layers
    assert layout["heads"] == ([2, 2] if family == "mpnet" else [1, 1])
    assert layout["ffn"] == [32, 32]

    bundle = result.artifacts["bundle"].path
    files = sorted(bundle.iterdir())
    assert {p.name for p in files} == {"model.onnx", "tokenizer.json", "labels.json", "bundle.json"}
    assert all(stat.S_IMODE(p.stat().st_mode) == 0o644 for p in files), {p.name: oct(p.stat().st_mode) for p in files}
    texts = [t for t, _ in make_texts(6, seed=9)]
    clf = _runtime().Bundle(bundle)
    assert set(clf.predict(texts)) <= {"fresh", "rotten"} and clf.logits(texts).shape == (6, 2)
