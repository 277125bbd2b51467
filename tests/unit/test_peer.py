"""The peer path (optimum export + ORTOptimizer + ORTQuantizer dynamic int8) and its place in bench and report."""

import importlib.util
import json
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.core import Target, _add_speedups
from edgekd.bench.stage import references
from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError, EdgekdError
from edgekd.peer import core as peer_core
from edgekd.peer.config import PEER_ARTIFACT, PeerConfig
from edgekd.report.core import build_report
from edgekd.report.markdown import render_markdown
from tests.conftest import make_texts

SETTING = "real_b1_t1"


def _optimum_onnx_installed() -> bool:
    try:
        return all(importlib.util.find_spec(m) is not None for m in ("optimum.exporters.onnx", "optimum.onnxruntime"))
    except ImportError:
        return False


# --- config -----------------------------------------------------------------------------------------------------

def _error(stages: list[dict]) -> str:
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": stages})
    return str(info.value)


def test_config_rejects_unknown_key_and_lists_the_allowed_ones():
    msg = _error([{"kind": "teacher"}, {"kind": "peer", "presets": "avx2"}])
    assert "stages.1.peer.presets: unknown key" in msg and "preset" in msg and "optimization_level" in msg


def test_config_rejects_a_preset_optimum_does_not_have():
    msg = _error([{"kind": "teacher"}, {"kind": "peer", "preset": "avx3"}])
    assert "stages.1.peer.preset" in msg and "'avx2', 'avx512_vnni' or 'arm64'" in msg and "avx3" in msg


def test_config_rejects_an_optimization_level_optimum_does_not_have():
    msg = _error([{"kind": "teacher"}, {"kind": "peer", "optimization_level": 3}])
    assert "stages.1.peer.optimization_level" in msg and "99" in msg


def test_peer_needs_its_model_from_an_earlier_stage():
    msg = _error([{"kind": "peer"}])
    assert "stage 1 (peer) needs teacher" in msg


def test_peer_provides_one_onnx_artifact_from_the_teacher():
    cfg = PeerConfig()
    assert cfg.requires() == ["teacher"] and cfg.provides() == [PEER_ARTIFACT] == ["peer.int8-dynamic.onnx"]


# --- optimum missing (transformers 5 installs go without optimum-onnx) ---------------------------------------------

def test_missing_optimum_fails_with_one_line_naming_the_package_and_the_install(monkeypatch):
    monkeypatch.setattr(peer_core, "_has_module", lambda name: name != "optimum.onnxruntime")
    with pytest.raises(EdgekdError, match=r"needs optimum-onnx \(optimum.onnxruntime not importable\): pip install "
                                          r"optimum==2.1.0 optimum-onnx==0.1.0") as info:
        peer_core.require_optimum()
    assert "\n" not in str(info.value)


def test_stage_fails_up_front_without_optimum(monkeypatch, tmp_path):
    """No artifact and no data exist: the stage must stop on optimum before it looks at either."""
    from edgekd.peer import stage
    from edgekd.stage_context import StageContext

    monkeypatch.setattr(peer_core, "_has_module", lambda name: False)
    ctx = StageContext(settings={"max_length": 64}, out=tmp_path, data_dir=tmp_path / "missing", artifacts={})
    with pytest.raises(EdgekdError, match="optimum.exporters.onnx and optimum.onnxruntime not importable"):
        stage.run(PeerConfig(), ctx)


@pytest.mark.skipif(_optimum_onnx_installed(), reason="optimum-onnx is installed here")
def test_without_optimum_onnx_installed_peer_quantize_refuses(tmp_path):
    with pytest.raises(EdgekdError, match="the peer stage needs optimum-onnx"):
        peer_core.peer_quantize(tmp_path / "model", tmp_path / "out", PeerConfig())


# --- the peer path itself ----------------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def peer(tiny_bert_dir, tmp_path_factory):
    pytest.importorskip("optimum.onnxruntime")
    return peer_core.peer_quantize(tiny_bert_dir, tmp_path_factory.mktemp("peer"), PeerConfig())


def test_peer_is_a_dynamic_int8_model_that_onnxruntime_loads(peer):
    import onnx

    from edgekd.ort import make_session

    ops = {node.op_type for node in onnx.load(str(peer.path)).graph.node}
    assert {"DynamicQuantizeLinear", "MatMulInteger"} <= ops
    assert peer.fused_operators.get("Attention", 0) > 0  # ORTOptimizer level 2 fused the attention
    assert peer.file_bytes < peer.optimized_bytes / 2
    assert make_session(peer.path).get_inputs()


def test_stock_quantizer_fails_on_the_fused_graph_and_the_fix_is_recorded(peer):
    # On onnxruntime 1.31 the stock ORTQuantizer call cannot type the fused ops' outputs.
    assert peer.fix == peer_core.DEFAULT_TENSOR_TYPE_FIX
    assert "Unable to find data type" in peer.fix_reason


def test_peer_logits_agree_with_fp32_pytorch(peer, tiny_bert_dir):
    import torch

    from edgekd.data.tokenize import encode, pad_batch
    from edgekd.models import load_classifier, load_tokenizer
    from edgekd.ort import make_session, ort_logits

    tokenizer = load_tokenizer(str(tiny_bert_dir))
    ids = encode(tokenizer, [text for text, _ in make_texts(64, seed=1)], 64)
    int8 = ort_logits(make_session(peer.path), ids, tokenizer.pad_token_id)
    batch = pad_batch(ids, tokenizer.pad_token_id)
    with torch.inference_mode():
        fp32 = load_classifier(str(tiny_bert_dir)).eval()(**batch).logits.numpy()
    assert (int8.argmax(-1) == fp32.argmax(-1)).mean() >= 0.9
    assert np.abs(int8 - fp32).max() < 0.05


def test_stage_declares_the_peer_artifact_with_its_validation_accuracy(tiny_bert_dir, tmp_path):
    pytest.importorskip("optimum.onnxruntime")
    from edgekd.artifacts import Artifact
    from edgekd.data import make_splits, save_splits
    from edgekd.peer import stage
    from edgekd.stage_context import StageContext

    save_splits(make_splits(make_texts(200), 0.2, 0.2, seed=0), tmp_path / "data")
    teacher = Artifact("teacher", "hf-model", tiny_bert_dir, role="teacher", precision="fp32", runtime="pytorch",
                       tokenizer=tiny_bert_dir, pad_id=0, task="text-classification")
    ctx = StageContext(settings={"max_length": 32}, out=tmp_path / "out", data_dir=tmp_path / "data",
                       artifacts={"teacher": teacher})
    stage.run(PeerConfig(), ctx)

    art = ctx.outputs[PEER_ARTIFACT]
    assert (art.type, art.role, art.source, art.precision, art.runtime) == (
        "onnx", "peer", "teacher", "int8-dynamic", "onnxruntime")
    assert art.path.is_file() and (art.tokenizer / "tokenizer.json").is_file() and art.pad_id == 0
    m = ctx.metrics["peer"]
    # Recomputed here with ONNX Runtime on the validation split: the recorded accuracy is the peer file's own.
    import onnxruntime as ort

    from edgekd.data.split import load_splits
    from edgekd.models import load_tokenizer

    val = load_splits(tmp_path / "data").validation
    tok = load_tokenizer(str(art.tokenizer))
    session = ort.InferenceSession(str(art.path), providers=["CPUExecutionProvider"])
    names = {i.name for i in session.get_inputs()}
    correct = 0
    for text, label in zip(val.texts, val.labels):
        enc = tok(text, return_tensors="np", truncation=True, max_length=32)
        feed = {k: v.astype(np.int64) for k, v in enc.items() if k in names}
        correct += int(session.run(None, feed)[0].argmax(-1)[0] == label)
    assert m["validation"]["accuracy"] == pytest.approx(correct / len(val), abs=1e-6)
    assert art.meta["validation_accuracy"] == m["validation"]["accuracy"]
    assert m["file_bytes"] == art.path.stat().st_size
    assert "validation" in PeerConfig.summary(ctx.metrics) and "DefaultTensorType" in PeerConfig.summary(ctx.metrics)


def test_default_tensor_type_patch_is_undone_after_the_call():
    ort_quantization = pytest.importorskip("optimum.onnxruntime.quantization")
    original = ort_quantization.ONNXQuantizer
    with pytest.raises(ValueError, match="inside"):
        with peer_core.default_tensor_type_float():
            assert ort_quantization.ONNXQuantizer is not original
            raise ValueError("inside")
    assert ort_quantization.ONNXQuantizer is original


# --- bench references and report ---------------------------------------------------------------------------------

TEACHER_ORT, TEACHER_PT = "teacher onnxruntime cpu", "teacher pytorch cpu"
STUDENT, PEER = "student.int8-dynamic onnxruntime cpu", "peer.int8-dynamic onnxruntime cpu"


def _targets(with_peer: bool) -> list[Target]:
    t = [Target(TEACHER_PT, Path("t"), "pytorch", 0, "teacher", "teacher", "pytorch"),
         Target(TEACHER_ORT, Path("t.onnx"), "onnxruntime", 0, "teacher", "teacher"),
         Target(STUDENT, Path("s.onnx"), "onnxruntime", 0, "student", "student", precision="int8-dynamic")]
    if with_peer:
        t.append(Target(PEER, Path("p.onnx"), "onnxruntime", 0, "teacher", "peer", precision="int8-dynamic"))
    return t


def test_bench_references_keep_the_teacher_first_and_add_the_peer_last():
    assert references(_targets(with_peer=True)) == [TEACHER_ORT, TEACHER_PT, PEER]
    assert references(_targets(with_peer=False)) == [TEACHER_ORT, TEACHER_PT]


# name: (p50 ms per round, accuracy, file MB)
_MEASURED = {TEACHER_PT: (20.0, 0.86, 90), TEACHER_ORT: (10.0, 0.86, 90), STUDENT: (2.0, 0.84, 8),
             PEER: (5.0, 0.85, 23)}


def _report(with_peer: bool, history: list[dict] | None = None) -> dict:
    targets = _targets(with_peer)
    rows = []
    for target in targets:
        p50, acc, mb = _MEASURED[target.name]
        rounds = [p50 * (1 + 0.01 * r) for r in range(5)]
        rows.append({**target.describe(), "file_bytes": mb * 10**6, "accuracy": acc, "macro_f1": acc,
                     "min_recall": acc - 0.02, "min_recall_class": "rotten", "batched": {"batch_size": 64,
                     "accuracy": acc}, "latency_ms": {SETTING: {"p50": p50, "p90": 1.2 * p50}},
                     "rounds_p50_ms": {SETTING: rounds}, "cv": {SETTING: 0.01}, "peak_rss_mb": 100.0,
                     "throughput_eps": {"real_b32_t1": 100.0}, "load_s": 0.1, "first_inference_ms": p50})
    refs = references(targets)
    for ref in refs:
        _add_speedups(rows, ref)
    bench = {"rows": rows, "references": refs, "threads": {"t1": 1}, "versions": {"edgekd": "test"},
             "machine": {"cpu": "test cpu", "logical_cores": 2, "physical_cores": 2, "cpu_flags": ["avx2"]},
             "config": {"rounds": 5, "warmup": 1}, "inputs": {"sample": 10, "describe": "ten texts"},
             "load": {"disturbed": False, "other_processes_cores_mean": 0.0, "limit_cores": 0.2, "cores": 2,
                      "load1_mean": 0.1, "load1_max": 0.2}}
    return build_report(bench, history or [], {"name": "report-test"}, SETTING)


def test_report_headline_compares_the_student_with_the_peer():
    report = _report(with_peer=True)
    h = report["headline"]
    assert h["peer"] == PEER
    assert h["speedup_vs_peer"]["median"] == pytest.approx(2.5)  # 5 ms / 2 ms, every round alike
    assert h["accuracy_delta_vs_peer_pt"] == pytest.approx(-1.0)
    assert h["size_ratio_vs_peer"] == pytest.approx(23 / 8, abs=0.01)
    assert h["speedup_vs_onnxruntime"]["median"] == pytest.approx(5.0)  # the teacher stays the headline

    md = render_markdown(report)
    peer_line = next(line for line in md.splitlines() if "than the peer path" in line)
    assert "2.50× faster" in peer_line and "ORTQuantizer dynamic int8" in peer_line and "-1.00 points" in peer_line
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header.rstrip(" |").endswith(f"vs {PEER} (peer path)")
    assert f"vs {TEACHER_ORT} | vs {TEACHER_PT}" in header  # the teacher columns keep their place
    student_row = next(line for line in md.splitlines() if line.startswith(f"| {STUDENT} |"))
    assert student_row.rstrip(" |").endswith("2.50× [2.50–2.50]")
    assert any(line.startswith(f"| {PEER} |") for line in md.splitlines())


def test_report_without_a_peer_renders_no_peer_line_or_column():
    report = _report(with_peer=False)
    assert not any(k.startswith("peer") or k.endswith("vs_peer") for k in report["headline"])
    md = render_markdown(report)
    assert "peer" not in md
    header = next(line for line in md.splitlines() if line.startswith("| model |"))
    assert header.rstrip(" |").endswith(f"vs {TEACHER_ORT} | vs {TEACHER_PT}")


def test_plot_labels_the_peer_point(tmp_path, monkeypatch):
    pytest.importorskip("matplotlib")
    import matplotlib.pyplot as plt

    from edgekd.report.plot import plot

    figures = []
    close = plt.close
    monkeypatch.setattr(plt, "close", lambda fig=None: figures.append(fig))
    plot(_report(with_peer=True), tmp_path / "report.png")
    assert (tmp_path / "report.png").is_file()
    ax = figures[0].axes[0]
    texts, legend = [t.get_text() for t in ax.texts], [t.get_text() for t in ax.get_legend().get_texts()]
    close(figures[0])
    # the peer's point is labelled with its own name, and its marker (a diamond) is the legend's peer entry
    assert sum(t.startswith(PEER.removesuffix(" onnxruntime cpu") + " ORT") for t in texts) == 1
    assert "peer path (optimum int8)" in legend


def test_peer_refuses_a_pruned_layout_and_keys_level_99_by_machine(tmp_path):
    from edgekd.peer.core import check_stock_layout

    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert", "edgekd_layout": {"heads": [2, 2]}}))
    with pytest.raises(EdgekdError, match="peer.model: 'pruned' has an edgekd-specific layout"):
        check_stock_layout(tmp_path, "pruned")
    (tmp_path / "config.json").write_text(json.dumps({"model_type": "bert"}))
    check_stock_layout(tmp_path, "teacher")
    assert PeerConfig(optimization_level=99).key_extras() == (("machine",), ())
    assert PeerConfig().key_extras() == ((), ())
