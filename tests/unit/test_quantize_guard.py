import json
import logging

import numpy as np
import onnx
import pytest
import torch

from edgekd.artifacts import Artifact
from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError
from edgekd.export.config import ExportConfig
from edgekd.export.core import export_onnx
from edgekd.models import load_classifier
from edgekd.models.arch import encoder_layers, layer_modules
from edgekd.ort import make_session, ort_logits
from edgekd.quantize import stage as quantize_stage
from edgekd.quantize.config import QuantGuard, QuantizeConfig
from edgekd.quantize.core import make_quantizer, quantizable_nodes
from edgekd.quantize.guard import guarded_quantize, mean_kl
from edgekd.stage_context import StageContext
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir

OUTLIER_NODE = "/model/bert/encoder/layer.0/output/dense/MatMul"
INTEGER_OPS = {"MatMulInteger", "DynamicQuantizeLinear", "QuantizeLinear", "DequantizeLinear"}


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    """A 2-layer tiny BERT exported to ONNX whose first FFN has one channel ~300x larger than the rest.

    Activations are quantized per tensor, so that channel takes the whole int8 range of the down-projection's
    input and the other channels round to zero: that one MatMul is by far the most sensitive node. Up and down
    projections are rescaled together, so the fp32 model stays a normal classifier.
    """
    folder = tmp_path_factory.mktemp("outlier")
    model = load_classifier(str(make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2,
                                                                initializer_range=0.2)),
                            attn_implementation="eager")
    parts = layer_modules(model, encoder_layers(model)[0])
    with torch.no_grad():
        parts["ffn_in"].weight[0] *= 300.0
        parts["ffn_in"].bias[0] = 300.0
        parts["ffn_out"].weight[:, 0] /= 300.0
    fp32 = export_onnx(model, folder / "onnx", ExportConfig(exporter="torch")).path
    tok = build_tokenizer(folder / "tok")
    ids = tok([t for t, _ in make_texts(96, seed=7)], truncation=True, max_length=32)["input_ids"]
    # Labels = the fp32 model's own predictions: fp32 scores 100%, and every int8 flip is a drop.
    labels = ort_logits(make_session(fp32), ids, tok.pad_token_id).argmax(-1)
    return fp32, ids, labels, tok.pad_token_id


def _float_ops(path, names):
    """Names among ``names`` present in the graph as MatMul/Gather reading neither a (de)quantization op's output
    nor an integer table (dynamic int8 gathers from an int8 embedding table, then dequantizes)."""
    graph = onnx.load(str(path)).graph
    producer = {out: node.op_type for node in graph.node for out in node.output}
    integer_tables = {t.name for t in graph.initializer
                      if t.data_type in (onnx.TensorProto.INT8, onnx.TensorProto.UINT8)}
    nodes = {node.name: node for node in graph.node}
    return [n for n in names if n in nodes and nodes[n].op_type in ("MatMul", "Gather")
            and not any(producer.get(i) in INTEGER_OPS or i in integer_tables for i in nodes[n].input)]


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_tiny_budget_keeps_the_sensitive_node_in_float(outlier, tmp_path, mode):
    fp32, ids, labels, pad = outlier
    graph, quantize = make_quantizer(fp32, tmp_path / "work", mode, "avx2", "minmax", ids[:64], pad)
    candidates = quantizable_nodes(graph, mode)
    assert OUTLIER_NODE in candidates
    dst = tmp_path / "int8.onnx"
    report = guarded_quantize(quantize, candidates, fp32, dst, ids, labels, pad,
                              QuantGuard(max_drop_points=0.0, max_excluded=3, examples=32))
    assert report.fp32_accuracy == 1.0 and report.drop_points_before > 0
    assert report.sensitivity[0]["node"] == OUTLIER_NODE  # the scan finds the outlier first
    assert len(report.sensitivity) == len(candidates) and report.scan_examples == 32
    assert report.excluded[0] == OUTLIER_NODE and len(report.excluded) <= 3
    assert report.drop_points_after < report.drop_points_before
    assert report.within_budget == (report.drop_points_after <= 0.0)
    # excluded nodes are float ops in the saved graph; the others are still quantized
    assert _float_ops(dst, report.excluded) == report.excluded
    others = [n for n in candidates if n not in report.excluded]
    assert _float_ops(dst, others) == []


def test_generous_budget_excludes_nothing(outlier, tmp_path):
    fp32, ids, labels, pad = outlier
    graph, quantize = make_quantizer(fp32, tmp_path / "work", "dynamic", "avx2")
    report = guarded_quantize(quantize, quantizable_nodes(graph, "dynamic"), fp32, tmp_path / "int8.onnx", ids,
                              labels, pad, QuantGuard(max_drop_points=100.0))
    assert report.drop_points_before > 0 and report.within_budget
    assert report.excluded == [] and report.sensitivity == []
    assert _float_ops(tmp_path / "int8.onnx", [OUTLIER_NODE]) == []  # quantized like every other node


def test_budget_out_of_reach_warns(outlier, tmp_path, caplog):
    fp32, ids, labels, pad = outlier
    graph, quantize = make_quantizer(fp32, tmp_path / "work", "static", "avx2", "minmax", ids[:64], pad)
    candidates = [n for n in quantizable_nodes(graph, "static") if n != OUTLIER_NODE]  # the fix is out of reach
    with caplog.at_level(logging.WARNING, logger="edgekd.quantize.guard"):
        report = guarded_quantize(quantize, candidates, fp32, tmp_path / "int8.onnx", ids, labels, pad,
                                  QuantGuard(max_drop_points=0.0, max_excluded=1, examples=16))
    assert not report.within_budget and len(report.excluded) <= 1
    assert any("still exceeds quantize.guard.max_drop_points" in r.getMessage() for r in caplog.records)


def test_mean_kl_is_zero_for_equal_logits_and_grows_with_distance():
    a = np.array([[2.0, -1.0], [0.5, 0.0]], dtype=np.float32)
    assert mean_kl(a, a) == pytest.approx(0.0, abs=1e-12)
    assert 0 < mean_kl(a, a + [[0.0, 1.0]]) < mean_kl(a, a + [[0.0, 3.0]])


def _write_splits(folder, fp32, pad, tok):
    """The data stage's format; validation labels are the fp32 model's predictions, test labels are nonsense."""
    folder.mkdir(parents=True)
    texts = [t for t, _ in make_texts(64, seed=11)]
    ids = tok(texts, truncation=True, max_length=32)["input_ids"]
    labels = ort_logits(make_session(fp32), ids, pad).argmax(-1).tolist()
    (folder / "labels.json").write_text(json.dumps(["fresh", "rotten"]))
    for name, rows in (("train", labels), ("validation", labels), ("test", [1 - x for x in labels])):
        (folder / f"{name}.jsonl").write_text("\n".join(json.dumps({"text": t, "label": y})
                                                        for t, y in zip(texts, rows)) + "\n")
    return folder


def test_stage_compares_calibrations_picks_one_and_reports_the_guard(outlier, tmp_path):
    fp32, _, _, pad = outlier
    tok = build_tokenizer(fp32.parent)  # the export folder holds its tokenizer, as the export stage leaves it
    data = _write_splits(tmp_path / "data", fp32, pad, tok)
    source = Artifact(name="student.onnx", type="onnx", path=fp32, role="student", tokenizer=fp32.parent, pad_id=pad,
                      task="text-classification")
    ctx = StageContext(settings={"max_length": 32}, out=tmp_path / "out", data_dir=data,
                       artifacts={"student.onnx": source})
    cfg = QuantizeConfig(modes=["static"], calibration_method="auto", calibration_examples=32,
                         guard=QuantGuard(max_drop_points=0.0, max_excluded=2, examples=16))
    quantize_stage.run(cfg, ctx)
    m = ctx.metrics["student.int8-static"]
    comparison = m["calibration_comparison"]
    assert set(comparison) == {"minmax", "entropy", "percentile"}
    assert all(0.0 <= row["validation_accuracy"] <= 1.0 and row["seconds"] > 0 for row in comparison.values())
    best = max(row["validation_accuracy"] for row in comparison.values())
    assert m["calibration_method"] == m["calibration_picked"]
    assert comparison[m["calibration_picked"]]["validation_accuracy"] == best
    guard = m["guard"]
    assert {"drop_points_before", "drop_points_after", "excluded", "sensitivity"} <= set(guard)
    assert guard["int8_accuracy"] == pytest.approx(m["validation"]["accuracy"])  # validation, never test
    assert _float_ops(ctx.outputs["student.int8-static.onnx"].path, guard["excluded"]) == guard["excluded"]
    assert "picked on validation" in QuantizeConfig.summary(ctx.metrics)


def _error(stage: dict) -> str:
    stages = [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]},
              {"kind": "quantize", "models": ["teacher"], **stage}]
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": stages})
    return str(info.value)


def test_config_errors_name_the_field():
    assert "stages.2.quantize.guard.max_drop_points" in _error({"guard": {"max_drop_points": -1}})
    assert "stages.2.quantize.guard.max_excluded" in _error({"guard": {"max_excluded": 0}})
    assert "stages.2.quantize.guard.examplez: unknown key" in _error({"guard": {"examplez": 5}})
    assert "'auto'" in _error({"calibration_method": "kl"})
    msg = _error({"modes": ["dynamic"], "calibration_method": "auto"})
    assert "calibration_method 'auto'" in msg and "static" in msg
    assert "compare_calibration" in _error({"modes": ["dynamic"], "compare_calibration": True})
    cfg = validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]},
                                        {"kind": "quantize", "models": ["teacher"], "guard": {}}]})
    assert cfg.stages[2].guard == QuantGuard() and cfg.stages[2].compare_calibration is False
