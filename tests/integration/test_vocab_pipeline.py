"""A trimmed student flows through export, quantize, bundle and bench with its own tokenizer."""

import csv
import json

from edgekd.config import load_pipeline
from edgekd.pipeline import run_pipeline
from tests.integration.conftest import write_pipeline
from tests.integration.test_cli import edgekd

STAGES = [
    {"kind": "teacher", "epochs": 1, "batch_size": 16, "learning_rate": 0.002},
    {"kind": "prune", "head_ratio": 0.5, "ffn_ratio": 0.5, "layer_ratio": 0.5, "calibration_batches": 2},
    {"kind": "distill", "epochs": 1, "batch_size": 16, "learning_rate": 0.002},
    {"kind": "vocab", "keep_characters": False},
    {"kind": "export", "models": ["teacher", "student"]},
    {"kind": "quantize", "models": ["student"], "modes": ["dynamic"]},
    {"kind": "bundle", "model": "student.int8-dynamic.onnx"},
    {"kind": "bench", "rounds": 1, "sample": 10, "warmup": 1, "turn_warmup": 1, "fixed_runs": 1, "threads": [1],
     "throughput_batches": 1, "throughput_batch": 4},
]


def test_trimmed_student_is_exported_bundled_and_benched_with_its_own_tokenizer(tmp_path, tiny_model_dir, tiny_csv):
    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", stages=STAGES)
    result = run_pipeline(load_pipeline(path))
    vocab = json.loads((result.stages[3].folder / "manifest.json").read_text())["metrics"]
    assert vocab["tokens_after"] < vocab["tokens_before"] and vocab["logits_max_abs_diff"] < 1e-5
    student = result.artifacts["student"]
    assert student.path.is_relative_to(result.stages[3].folder)  # the trimmed one replaced the distilled one
    vocab_size = json.loads((student.path / "config.json").read_text())["vocab_size"]
    for name in ("student.onnx", "student.int8-dynamic.onnx", "bundle"):
        tok = json.loads((result.artifacts[name].tokenizer / "tokenizer.json").read_text())
        assert len(tok["model"]["vocab"]) == vocab_size == vocab["tokens_after"], name

    bench = result.stages[-1].folder
    rows = {r["name"]: r for r in json.loads((bench / "bench.json").read_text())["rows"]}
    assert {r["inputs"] for n, r in rows.items() if n.startswith("teacher")} == {"inputs.npz"}
    assert {r["inputs"] for n, r in rows.items() if n.startswith("student")} == {"inputs-2.npz"}
    predictions = {json.loads(p.read_text())["name"]: json.loads(p.read_text())["predictions"]
                   for p in (bench / "predictions").glob("*.json")}
    # The bundle tokenises the texts itself; the int8 row gets the bench's ids: both see the same tokens.
    bundle = next(n for n in predictions if n.startswith("bundle"))
    assert predictions[bundle] == predictions["student.int8-dynamic onnxruntime cpu"]
    assert predictions["student pytorch cpu"] == predictions["student onnxruntime cpu"]


def test_bench_cli_feeds_each_model_its_own_tokenisation_of_the_same_texts(tiny_model_dir, tiny_csv, tmp_path):
    from transformers import AutoModelForSequenceClassification

    from edgekd.models import load_tokenizer, save_classifier
    from edgekd.vocab.config import VocabConfig
    from edgekd.vocab.core import kept_token_ids, trim_vocabulary

    labels = {0: "fresh", 1: "rotten"}
    model = AutoModelForSequenceClassification.from_pretrained(
        tiny_model_dir, id2label=labels, label2id={v: k for k, v in labels.items()}).eval()
    tok = load_tokenizer(str(tiny_model_dir))
    model.save_pretrained(tmp_path / "full")
    tok.save_pretrained(tmp_path / "full")
    with open(tiny_csv) as f:
        texts = [row["text"] for row in csv.DictReader(f)]
    trimmed, new_tok, report = trim_vocabulary(model, tok, kept_token_ids(tok, texts, VocabConfig()))
    assert report.tokens_after < report.tokens_before
    save_classifier(trimmed, new_tok, tmp_path / "trimmed")

    out = tmp_path / "r.json"
    proc = edgekd("bench", tmp_path / "full", tmp_path / "trimmed", "--data", tiny_csv, "--label-column", "label",
                  "--rounds", "1", "--sample", "8", "--threads", "1", "--warmup", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    full, small = json.loads(out.read_text())["rows"]
    assert (full["inputs"], small["inputs"]) == ("inputs.npz", "inputs-2.npz")
    # Every text's tokens were kept: the same predictions, so the same confusion matrix.
    assert full["confusion"] == small["confusion"] and sum(map(sum, small["confusion"])) == 400
