"""`edgekd bench` on models edgekd did not make: an ONNX file exported by hand, a model folder."""

import json

import pytest
import torch

from tests.conftest import make_tiny_model_dir
from tests.integration.test_cli import _one_line_error, edgekd


@pytest.fixture(scope="module")
def foreign_onnx(tmp_path_factory):
    """A classifier exported with plain torch.onnx (not edgekd), its tokenizer beside it."""
    from transformers import AutoModelForSequenceClassification

    folder = make_tiny_model_dir(tmp_path_factory.mktemp("foreign"), "bert")
    model = AutoModelForSequenceClassification.from_pretrained(
        folder, id2label={0: "fresh", 1: "rotten"}, label2id={"fresh": 0, "rotten": 1}).eval()
    model.save_pretrained(folder)  # config.json now names the classes, so accuracy can be scored

    class Logits(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, input_ids, attention_mask):
            return self.model(input_ids=input_ids, attention_mask=attention_mask).logits

    ids = torch.ones((1, 8), dtype=torch.long)
    axes = {"input_ids": {0: "b", 1: "s"}, "attention_mask": {0: "b", 1: "s"}}
    torch.onnx.export(Logits().eval(), (ids, torch.ones_like(ids)), str(folder / "exported.onnx"),
                      input_names=["input_ids", "attention_mask"], output_names=["logits"], dynamic_axes=axes,
                      dynamo=False)
    return folder


def test_bench_an_onnx_file_it_did_not_make(foreign_onnx, tmp_path):
    out = tmp_path / "r.json"
    proc = edgekd("bench", foreign_onnx / "exported.onnx", "--rounds", "2", "--samples", "15", "--threads", "1",
                  "--warmup", "2", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert "p50 ms t1" in proc.stdout and "exported.onnx onnxruntime cpu" in proc.stdout
    result = json.loads(out.read_text())
    row = result["rows"][0]
    assert row["latency_ms"]["real_b1_t1"]["runs"] == 30 and row["peak_rss_mb"] > 0 and row["file_bytes"] > 0
    assert "synthetic" in result["inputs"]["describe"] and "accuracy" not in row
    assert "[load 1/1]" in proc.stderr  # progress on the terminal


def test_bench_two_models_on_a_dataset_gives_paired_speedup_and_accuracy(foreign_onnx, tiny_csv, tmp_path):
    out = tmp_path / "r.json"
    proc = edgekd("bench", foreign_onnx, foreign_onnx / "exported.onnx", "--data", tiny_csv, "--label-column",
                  "label", "--rounds", "3", "--sample", "12", "--threads", "1", "--warmup", "1", "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    result = json.loads(out.read_text())
    torch_row, onnx_row = result["rows"]
    assert result["references"] == [torch_row["name"]]
    paired = onnx_row["speedup_vs"][torch_row["name"]]["real_b1_t1"]
    assert len(paired["rounds"]) == 3 and paired["low"] <= paired["median"] <= paired["high"]
    # Same weights, same inputs: the two runtimes agree on every prediction, so on accuracy.
    assert torch_row["accuracy"] == onnx_row["accuracy"] and sum(map(sum, onnx_row["confusion"])) == 400


def test_bench_help_explains_every_option():
    proc = edgekd("bench", "--help")
    assert proc.returncode == 0
    for option in ("--data", "--text-column", "--label-column", "--tokenizer", "--max-length", "--lengths",
                   "--samples", "--vocab-size", "--rounds", "--sample", "--warmup", "--threads", "--fixed-length",
                   "--fixed-runs", "--throughput-batch", "--baseline", "--max-other-cpu", "--strict", "--seed", "--out"):
        assert option in proc.stdout
    assert "paired" in proc.stdout and "examples:" in proc.stdout


def test_bench_bad_input_gives_one_line_errors(foreign_onnx, tmp_path):
    _one_line_error(edgekd("bench", tmp_path / "nope.onnx"), "nope.onnx", "not an .onnx file")
    _one_line_error(edgekd("bench", foreign_onnx / "exported.onnx", "--threads", "64", "--out", tmp_path / "x.json"),
                    "64 threads", "logical cores")
    _one_line_error(edgekd("bench", foreign_onnx / "exported.onnx", "--rounds", "0"), "--rounds")
    _one_line_error(edgekd("bench", foreign_onnx / "exported.onnx", "--baseline", "3"), "--baseline 3", "0..0")
    broken = tmp_path / "broken"
    broken.mkdir()
    (broken / "model.onnx").write_bytes((foreign_onnx / "exported.onnx").read_bytes())
    (broken / "config.json").write_text("{ not json")
    _one_line_error(edgekd("bench", broken / "model.onnx"), "config.json", "cannot be read as JSON")
    proc = edgekd("bench", foreign_onnx / "exported.onnx", "--samples", "-1")
    assert proc.returncode == 2 and "--samples" in proc.stderr and "Traceback" not in proc.stderr


def test_bench_refuses_models_whose_labels_disagree(foreign_onnx, tiny_csv, tmp_path):
    import shutil

    swapped = tmp_path / "swapped"
    shutil.copytree(foreign_onnx, swapped)
    config = json.loads((swapped / "config.json").read_text())
    config["id2label"] = {"0": "rotten", "1": "fresh"}
    (swapped / "config.json").write_text(json.dumps(config))
    _one_line_error(edgekd("bench", foreign_onnx / "exported.onnx", swapped / "exported.onnx", "--data", tiny_csv,
                           "--label-column", "label"), "labels differ")
