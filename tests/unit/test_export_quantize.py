import json
import logging
import sys

import numpy as np
import onnx
import pytest

from edgekd.artifacts import Artifact
from edgekd.errors import ParityError
from edgekd.export import stage as export_stage
from edgekd.export.config import ExportConfig
from edgekd.export.core import check_parity, export_onnx, optimum_exporter_installed, parity_inputs
from edgekd.models import load_classifier, load_tokenizer, save_classifier
from edgekd.ort import make_session, ort_logits
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import prune
from edgekd.quantize import stage as quantize_stage
from edgekd.quantize.config import QuantizeConfig
from edgekd.quantize.core import calibration_batches, quantize_dynamic_int8, quantize_static_int8
from edgekd.stage_context import StageContext
from tests.conftest import build_tokenizer, make_texts
from tests.unit.test_prune import _calibration

# optimum-onnx caps transformers below 4.58, so the transformers 5 test leg installs without it.
requires_optimum = pytest.mark.skipif(not optimum_exporter_installed(),
                                      reason="optimum's ONNX exporter (optimum-onnx) is not installed")


@pytest.fixture(scope="module")
def pruned_dir(tmp_path_factory, tiny_bert_dir):
    folder = tmp_path_factory.mktemp("pruned")
    student, report = prune(load_classifier(str(tiny_bert_dir)), PruneConfig(), _calibration())
    save_classifier(student, build_tokenizer(folder / "tok"), folder / "model", layout=report.layout)
    return folder / "model"


def _ids(tokenizer, n=24):
    return tokenizer([t for t, _ in make_texts(n, seed=5)], truncation=True, max_length=32)["input_ids"]


@pytest.mark.parametrize("exporter", [pytest.param("optimum", marks=requires_optimum), "torch"])
def test_export_pruned_layout_and_parity(pruned_dir, tmp_path, exporter):
    model = load_classifier(str(pruned_dir), attn_implementation="eager")
    result = export_onnx(model, tmp_path / "onnx", ExportConfig(exporter=exporter))
    assert result.path.is_file() and result.exporter == exporter
    tok = build_tokenizer(tmp_path / "tok")
    inputs = parity_inputs(_ids(tok), [(1, 5), (3, 17), (4, 32)], tok.pad_token_id)
    assert any((mask == 0).any() for _, mask in inputs)  # padding is exercised
    parity = check_parity(model, result.path, inputs, atol=1e-4)
    assert parity["max_abs_diff"] < 1e-4 and parity["argmax_agreement"] == 1.0
    graph_inputs = {i.name: i for i in onnx.load(str(result.path)).graph.input}
    dims = graph_inputs["input_ids"].type.tensor_type.shape.dim
    assert not dims[0].HasField("dim_value") and not dims[1].HasField("dim_value")  # dynamic batch and sequence


def test_optimum_requested_but_not_installed_exports_with_torch(pruned_dir, tmp_path, monkeypatch, caplog):
    monkeypatch.setitem(sys.modules, "optimum.exporters.onnx", None)  # what an install without optimum-onnx sees
    model = load_classifier(str(pruned_dir), attn_implementation="eager")
    with caplog.at_level(logging.INFO, logger="edgekd.export.core"):
        result = export_onnx(model, tmp_path / "onnx", ExportConfig(exporter="optimum"))
    assert result.exporter == "torch" and result.fallback_reason == "optimum not installed"
    assert result.path.is_file()
    records = [r for r in caplog.records if r.name == "edgekd.export.core"]
    assert len(records) == 1 and records[0].levelno == logging.INFO  # expected on such installs: no warning


def _write_splits(folder, n=48):
    """The data stage's output format: labels.json and {train,validation,test}.jsonl with integer labels."""
    folder.mkdir(parents=True)
    labels = ["fresh", "rotten"]
    (folder / "labels.json").write_text(json.dumps(labels))
    rows = [{"text": text, "label": labels.index(label)} for text, label in make_texts(n, seed=3)]
    for name in ("train", "validation", "test"):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    return folder


def test_quantize_after_a_torch_export_stage_gets_the_pad_id(pruned_dir, tmp_path):
    """The export stage's folder holds a complete tokenizer: torch.onnx writes no config.json next to the
    model, and transformers 5 loads a bare tokenizer.json with pad_token_id None (quantize then breaks)."""
    data = _write_splits(tmp_path / "data")
    settings = {"max_length": 32, "seed": 0}
    model = Artifact(name="student", type="hf-model", path=pruned_dir)
    export_ctx = StageContext(settings=settings, out=tmp_path / "export", data_dir=data, artifacts={"student": model})
    export_stage.run(ExportConfig(models=["student"], exporter="torch", parity_shapes=[(2, 16)]), export_ctx)
    assert export_ctx.metrics["student"]["exporter"] == "torch"
    expected_pad = load_tokenizer(str(pruned_dir)).pad_token_id
    assert expected_pad == 0
    assert load_tokenizer(str(tmp_path / "export" / "student")).pad_token_id == expected_pad
    quantize_ctx = StageContext(settings=settings, out=tmp_path / "quantize", data_dir=data,
                                artifacts=dict(export_ctx.outputs))
    quantize_stage.run(QuantizeConfig(models=["student"], modes=["dynamic"]), quantize_ctx)
    assert (tmp_path / "quantize" / "student.int8-dynamic" / "model.onnx").is_file()
    int8 = quantize_ctx.outputs["student.int8-dynamic.onnx"]
    assert int8.pad_id == expected_pad and load_tokenizer(str(int8.tokenizer)).pad_token_id == expected_pad
    assert "validation" in quantize_ctx.metrics["student.int8-dynamic"]  # scored on validation; test is for the bench


def test_parity_gate_stops_a_wrong_export(pruned_dir, tmp_path):
    model = load_classifier(str(pruned_dir), attn_implementation="eager")
    result = export_onnx(model, tmp_path / "onnx", ExportConfig(exporter="torch"))
    graph = onnx.load(str(result.path))
    target = max(graph.graph.initializer, key=lambda t: np.prod(t.dims) if len(t.dims) == 2 else 0)
    arr = onnx.numpy_helper.to_array(target).copy()
    arr += np.random.default_rng(0).normal(0.0, 0.5, arr.shape).astype(arr.dtype)  # corrupt one weight matrix
    target.CopyFrom(onnx.numpy_helper.from_array(arr, target.name))
    onnx.save(graph, str(result.path))
    tok = build_tokenizer(tmp_path / "tok")
    with pytest.raises(ParityError, match="differs from PyTorch"):
        check_parity(model, result.path, parity_inputs(_ids(tok), [(2, 16)], tok.pad_token_id), atol=1e-4)


@pytest.mark.parametrize("preset", ["avx2", "arm64"])
def test_int8_dynamic_and_static(pruned_dir, tmp_path, preset):
    model = load_classifier(str(pruned_dir), attn_implementation="eager")
    fp32 = export_onnx(model, tmp_path / "onnx", ExportConfig(exporter="torch")).path
    tok = build_tokenizer(tmp_path / "tok")
    ids = _ids(tok, 64)
    reference = ort_logits(make_session(fp32), ids, tok.pad_token_id)
    dyn = quantize_dynamic_int8(fp32, tmp_path / "dyn.onnx", preset).path
    sta = quantize_static_int8(fp32, tmp_path / "sta.onnx", preset, "minmax",
                               calibration_batches(ids[:32], tok.pad_token_id, 8)).path
    for path in (dyn, sta):
        graph = onnx.load(str(path))
        ops = {n.op_type for n in graph.graph.node}
        assert ops & {"DynamicQuantizeLinear", "MatMulInteger", "QuantizeLinear", "DequantizeLinear"}
        # the word embedding table is int8 too (Gather quantized), not a float32 initializer
        big_float = [t.name for t in graph.graph.initializer if t.data_type == onnx.TensorProto.FLOAT
                     and np.prod(t.dims) >= len(tok) * 64]
        assert not big_float
        logits = ort_logits(make_session(path), ids, tok.pad_token_id)
        assert logits.shape == reference.shape
        assert np.abs(logits - reference).max() < 0.5  # close to fp32, not identical
    assert dyn.stat().st_size < fp32.stat().st_size
