"""ONNX Runtime Mobile (.ort): conversion of fp32 / int8 / 4-bit-embedding graphs, the parity gate, the stage."""

import dataclasses
from typing import get_args

import numpy as np
import onnx
import pytest
import torch

from edgekd.artifacts import Artifact
from edgekd.bench.config import BenchConfig
from edgekd.bench.stage import plan_targets, references
from edgekd.config import validate_pipeline
from edgekd.data.tokenize import encode
from edgekd.errors import AssetError, ConfigError
from edgekd.export.config import ExportConfig
from edgekd.export.core import export_onnx
from edgekd.mobile import stage as mobile_stage
from edgekd.mobile.config import MobileConfig, MobileTargetName
from edgekd.mobile.core import parity_gate
from edgekd.mobile.ort import convert_to_ort, ort_file_logits, required_operators
from edgekd.models import load_classifier
from edgekd.models.arch import encoder_layers, layer_modules
from edgekd.ort import make_session, ort_logits
from edgekd.quantize.core import make_quantizer
from edgekd.quantize.block_embeddings import with_block_embeddings
from edgekd.stage_context import StageContext
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir
from tests.unit.test_quantize_guard import _write_splits

FLAVOURS = ("fp32", "int8-dynamic", "int8-static", "int8-dynamic-int4emb")


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer tiny BERT (hf folder), its fp32 ONNX export and three quantized versions of it."""
    folder = tmp_path_factory.mktemp("mobile")
    hf = make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2, initializer_range=0.2)
    fp32 = export_onnx(load_classifier(str(hf), attn_implementation="eager"), folder / "onnx",
                       ExportConfig(exporter="torch")).path
    tok = build_tokenizer(fp32.parent)  # beside the export, as the export stage leaves it
    ids = tok([t for t, _ in make_texts(64, seed=3)], truncation=True, max_length=32)["input_ids"]
    files = {"fp32": fp32}
    for flavour in FLAVOURS[1:]:
        (folder / flavour).mkdir()
    for mode in ("dynamic", "static"):
        graph, quantize = make_quantizer(fp32, folder / f"work-{mode}", mode, "avx2", token_ids=ids[:16],
                                         pad_id=tok.pad_token_id)
        files[f"int8-{mode}"] = quantize(folder / f"int8-{mode}" / "model.onnx", []).path
        if mode == "dynamic":
            files[FLAVOURS[3]] = with_block_embeddings(graph, quantize)(folder / FLAVOURS[3] / "model.onnx", []).path
    for path in files.values():
        tok.save_pretrained(path.parent)
    return hf, files, ids, tok.pad_token_id


@pytest.mark.parametrize("flavour", FLAVOURS)
def test_ort_file_gives_the_onnx_logits_and_lists_its_operators(tiny, tmp_path, flavour):
    _, files, ids, pad = tiny
    result = convert_to_ort(files[flavour], tmp_path / "out")
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["model.ort", "required_operators.config"]
    assert result.path.read_bytes()[4:8] == b"ORTM"  # the flatbuffer's file identifier, not an ONNX protobuf
    diff = np.abs(ort_file_logits(result.path, ids, pad) - ort_logits(make_session(files[flavour]), ids, pad)).max()
    assert diff <= 1e-5, diff
    text = result.required_operators.read_text()
    assert "# - model.ort" in text and "/tmp" not in text  # the header names the shipped file, not a temp path
    ops = required_operators(result.required_operators)
    every = set().union(*ops.values())  # (int4emb: the word table's Gather became GatherBlockQuantized)
    assert {"Gather", "Softmax", "LayerNormalization"} <= ops["ai.onnx"]
    if flavour == "fp32":
        assert not every & {"DynamicQuantizeLinear", "QuantizeLinear", "MatMulInteger", "MatMulIntegerToFloat"}
    elif flavour.startswith("int8-dynamic"):
        # ORT fuses MatMulInteger + its scaling into these when it saves the optimised graph
        assert "DynamicQuantizeLinear" in ops["ai.onnx"]
        assert {"MatMulIntegerToFloat", "DynamicQuantizeMatMul"} <= ops["com.microsoft"]
    else:
        assert {"QLinearMatMul", "QuantizeLinear", "DequantizeLinear"} <= ops["ai.onnx"]
    assert ("GatherBlockQuantized" in every) == flavour.endswith("int4emb")


def test_a_graph_with_4_bit_tensors_is_refused_before_converting(tmp_path):
    values = np.array([[-8, -1, 0, 7, 3, -5, 1, 2]], dtype=np.int8)  # [1 row, 8 columns]
    table = onnx.helper.make_tensor("table", onnx.TensorProto.INT4, values.shape, values.ravel().tolist())
    node = onnx.helper.make_node("GatherBlockQuantized", ["table", "ids", "scales"], ["out"], domain="com.microsoft",
                                 block_size=16, gather_axis=0, quantize_axis=1)
    graph = onnx.helper.make_graph([node], "g", [], [], initializer=[table])
    onnx.save(onnx.helper.make_model(graph), str(tmp_path / "int4.onnx"))
    with pytest.raises(AssetError) as info:
        convert_to_ort(tmp_path / "int4.onnx", tmp_path / "out")
    assert "int4.onnx" in str(info.value) and "no 4-bit tensor type (table)" in str(info.value)


def test_a_graph_that_cannot_be_converted_is_one_line_naming_the_file(tmp_path):
    bad = tmp_path / "broken.onnx"
    bad.write_bytes(b"not a protobuf at all")
    with pytest.raises(AssetError) as info:
        convert_to_ort(bad, tmp_path / "out")
    assert str(bad) in str(info.value) and "\n" not in str(info.value)
    with pytest.raises(AssetError, match="no such ONNX file"):
        convert_to_ort(tmp_path / "missing.onnx", tmp_path / "out")


def test_parity_gate_passes_and_fails_on_agreement():
    torch_logits = np.array([[1.0, 0.0], [0.0, 1.0], [2.0, 1.0], [0.0, 3.0]], dtype=np.float32)
    same = parity_gate(torch_logits + 1e-4, torch_logits, torch_logits, 0.995)
    assert same["gate"] == "passed" and same["max_abs_diff_vs_pytorch"] == pytest.approx(1e-4, rel=1e-2)
    flipped = np.concatenate([[[0.0, 1.0]], torch_logits[1:]]).astype(np.float32)
    report = parity_gate(flipped, torch_logits, torch_logits, 0.8)
    assert report["gate"].startswith("failed: argmax agreement with PyTorch 0.7500 < 0.8 (1 of 4")
    assert parity_gate(flipped * np.nan, torch_logits, torch_logits, 0.0)["gate"] == "failed: non-finite logits"
    # against its source: an int8 file faithful to its int8 .onnx passes although int8 flipped a text vs PyTorch
    source = parity_gate(flipped, flipped, torch_logits, 0.99, against="source")
    assert source["gate"] == "passed" and source["agreement_vs_pytorch"] == 0.75 and source["gate_against"] == "source"
    assert parity_gate(torch_logits, flipped, torch_logits, 0.8, "source")["gate"].startswith(
        "failed: argmax agreement with its source ONNX model 0.7500")


def _context(tiny, tmp_path, names=FLAVOURS[:3]):
    hf, files, _, pad = tiny
    data = _write_splits(tmp_path / "data", files["fp32"], pad, build_tokenizer(tmp_path / "tok"))
    arts = {"student": Artifact("student", "hf-model", hf, role="student", tokenizer=hf, pad_id=pad,
                                task="text-classification")}
    for flavour in names:
        name = "student.onnx" if flavour == "fp32" else f"student.{flavour}.onnx"
        arts[name] = Artifact(name, "onnx", files[flavour], role="student", source="student", precision=flavour,
                              runtime="onnxruntime", tokenizer=files[flavour].parent, pad_id=pad,
                              task="text-classification")
    arts["teacher.onnx"] = dataclasses.replace(arts["student.onnx"], name="teacher.onnx", role="teacher")
    return StageContext(settings={"max_length": 32}, out=tmp_path / "out", data_dir=data, artifacts=arts)


def test_stage_declares_every_passing_ort_file_with_its_fields(tiny, tmp_path):
    ctx = _context(tiny, tmp_path)
    mobile_stage.run(MobileConfig(min_agreement_int8=0.9), ctx)
    # default: every ONNX artifact of role student (the teacher's export is not converted)
    assert set(ctx.outputs) == {"student.ort", "student.int8-dynamic.ort", "student.int8-static.ort"}
    for name, art in ctx.outputs.items():
        m = ctx.metrics[name]
        assert art.type == "ort" and art.runtime == "onnxruntime" and art.role == "student"
        assert art.source == name.replace(".ort", ".onnx") and art.precision == ctx.artifacts[art.source].precision
        assert art.path.name == "model.ort" and (art.tokenizer / "tokenizer.json").is_file()
        assert (art.path.parent / "config.json").is_file()  # id2label and positions for `edgekd bench model.ort`
        assert (art.path.parent / art.meta["required_operators"]).is_file()
        assert m["gate"] == "passed" and m["examples"] == 64 and m["agreement_vs_pytorch"] >= 0.9
        assert art.meta["max_abs_diff_vs_onnx"] == m["max_abs_diff_vs_onnx"] <= 1e-5  # same graph, same kernels
    # fp32: the export matches PyTorch, so the .ort does too (validation labels are the fp32 model's predictions)
    assert ctx.metrics["student.ort"]["max_abs_diff_vs_pytorch"] < 1e-3
    assert ctx.metrics["student.ort"]["validation_accuracy"] == 1.0 and "student.ort: " in MobileConfig.summary(
        ctx.metrics)


def test_gate_leaves_out_a_corrupted_ort_file_and_the_others_go_on(tiny, tmp_path, monkeypatch):
    ctx = _context(tiny, tmp_path)
    # The fp32 .ort is written from another model's graph (same architecture, other weights).
    other = load_classifier(str(make_tiny_model_dir(tmp_path / "o", seed=5, num_hidden_layers=2,
                                                    initializer_range=0.2)))
    wrong = export_onnx(other, tmp_path / "wrong", ExportConfig(exporter="torch")).path
    real = mobile_stage.TARGETS["ort"]

    def corrupted(onnx_path, out_dir):
        return real.convert(wrong if onnx_path == tiny[1]["fp32"] else onnx_path, out_dir)

    monkeypatch.setitem(mobile_stage.TARGETS, "ort", dataclasses.replace(real, convert=corrupted))
    mobile_stage.run(MobileConfig(), ctx)
    m = ctx.metrics["student.ort"]
    assert m["gate"].startswith("failed: argmax agreement with its source ONNX model") and m["agreement_vs_onnx"] < 0.995
    assert m["max_abs_diff_vs_onnx"] > 0.1  # the numbers say what went wrong
    assert "student.ort: failed:" in MobileConfig.summary(ctx.metrics)
    assert set(ctx.outputs) == {"student.int8-dynamic.ort", "student.int8-static.ort"}  # the others go on


@pytest.fixture(scope="module")
def outlier(tmp_path_factory):
    """A tiny BERT with one FFN channel ~300x the others (saved: PyTorch is this model too), fp32 and dynamic int8:
    the per-tensor activation scale rounds the other channels away, so int8 flips some predictions."""
    folder = tmp_path_factory.mktemp("outlier")
    model = load_classifier(str(make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2,
                                                    initializer_range=0.2)), attn_implementation="eager")
    parts = layer_modules(model, encoder_layers(model)[0])
    with torch.no_grad():
        parts["ffn_in"].weight[0] *= 300.0
        parts["ffn_in"].bias[0] = 300.0
        parts["ffn_out"].weight[:, 0] /= 300.0
    model.save_pretrained(folder / "hf")
    fp32 = export_onnx(model, folder / "onnx", ExportConfig(exporter="torch")).path
    tok = build_tokenizer(fp32.parent)
    (folder / "int8-dynamic").mkdir()
    int8 = make_quantizer(fp32, folder / "work", "dynamic", "avx2")[1](folder / "int8-dynamic" / "model.onnx", []).path
    tok.save_pretrained(int8.parent)
    return folder / "hf", {"fp32": fp32, "int8-dynamic": int8}, None, tok.pad_token_id


def test_gate_leaves_out_an_int8_file_below_the_threshold(outlier, tmp_path):
    ctx = _context(outlier, tmp_path, names=["fp32", "int8-dynamic"])
    ids = encode(build_tokenizer(tmp_path / "tok2"), ctx.splits.validation.texts, 32)
    pytorch = mobile_stage._pytorch_logits(outlier[0], ids, outlier[3]).argmax(-1)
    flips = int((ort_logits(make_session(outlier[1]["int8-dynamic"]), ids, outlier[3]).argmax(-1) != pytorch).sum())
    assert 0 < flips < 64  # int8 really disagrees somewhere, so a threshold of 1.0 cannot be met
    mobile_stage.run(MobileConfig(min_agreement_int8=1.0), ctx)  # against the source: faithful, so it passes
    assert ctx.metrics["student.int8-dynamic.ort"]["gate"] == "passed"
    ctx = _context(outlier, tmp_path / "strict", names=["fp32", "int8-dynamic"])
    mobile_stage.run(MobileConfig(min_agreement_int8=1.0, gate_against="pytorch"), ctx)
    m = ctx.metrics["student.int8-dynamic.ort"]
    assert m["gate"] == (f"failed: argmax agreement with PyTorch {1 - flips / 64:.4f} < 1.0 ({flips} of 64 "
                         "validation texts differ)")
    assert m["agreement_vs_onnx"] == 1.0  # the .ort is faithful to its int8 source; int8 itself flips
    assert set(ctx.outputs) == {"student.ort"} and ctx.metrics["student.ort"]["gate"] == "passed"
    assert not (ctx.out / "student.int8-dynamic.ort").exists()  # a failed file does not stay to be shipped


def test_stage_refuses_a_run_without_a_pytorch_source(tiny, tmp_path):
    ctx = _context(tiny, tmp_path, names=["fp32"])
    ctx.artifacts.pop("student")
    with pytest.raises(ConfigError, match="not a PyTorch model"):
        mobile_stage.run(MobileConfig(), ctx)


def _pipeline_error(mobile: dict, before=({"kind": "export", "models": ["teacher"]},)) -> str:
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": [{"kind": "teacher"}, *before, {"kind": "mobile", **mobile}]})
    return str(info.value)


def test_config_errors_name_the_field():
    assert "stages.2.mobile.targetz: unknown key" in _pipeline_error({"targetz": ["ort"]})
    assert "stages.2.mobile.targets.0" in _pipeline_error({"targets": ["tflite"]})
    assert "stages.2.mobile.min_agreement_int8" in _pipeline_error({"min_agreement_int8": 1.5})
    assert "stages.2.mobile.models" in _pipeline_error({"models": ["teacher"]})  # not an ONNX artifact name
    assert "needs teacher.int8-dynamic.onnx" in _pipeline_error({"models": ["teacher.int8-dynamic.onnx"]})
    assert "no earlier stage writes an ONNX model" in _pipeline_error({}, before=())
    with pytest.raises(ConfigError, match=r"stage 3 \(mobile\) does not support task .causal-lm."):
        validate_pipeline({"task": "causal-lm", "stages": [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]},
                                                           {"kind": "mobile"}]})
    ok = validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]},
                                       {"kind": "mobile", "models": ["teacher.onnx"]}]})
    assert ok.stages[-1].provides() == ["teacher.ort"]
    assert set(get_args(MobileTargetName)) == set(mobile_stage.TARGETS)  # one table entry per allowed target
    # the cache key covers the converters of the chosen targets only (an .ort-only run keeps its key)
    assert MobileConfig().key_extras() == ((), ())
    assert "executorch" in MobileConfig(targets=["ort", "executorch"]).key_extras()[1]


def test_bench_stage_plans_ort_rows_from_the_artifact_type(tiny, tmp_path):
    hf, files, _, pad = tiny
    ort = convert_to_ort(files["int8-dynamic"], tmp_path / "x.ort").path
    arts = {
        "teacher": Artifact("teacher", "hf-model", hf, role="teacher", tokenizer=hf, pad_id=pad),
        "teacher.onnx": Artifact("teacher.onnx", "onnx", files["fp32"], role="teacher", source="teacher",
                                 precision="fp32", runtime="onnxruntime", tokenizer=hf, pad_id=pad),
        # named like an ONNX file on purpose: the row must follow the type, not the name
        "teacher.int8.odd-name.onnx": Artifact("teacher.int8.odd-name.onnx", "ort", ort, role="teacher",
                                               source="teacher.onnx", precision="fp32", runtime="onnxruntime",
                                               tokenizer=hf, pad_id=pad),
    }
    targets = plan_targets(arts, BenchConfig(cuda="off"))
    row = next(t for t in targets if t.path == ort)
    assert (row.format, row.runtime, row.model, row.role) == ("ort", "onnxruntime", "teacher", "teacher")
    assert row.parameters == next(t for t in targets if t.format == "pytorch").parameters
    # an fp32 teacher .ort is not a second reference: the ONNX Runtime reference stays the .onnx row
    assert references(targets) == ["teacher onnxruntime cpu", "teacher pytorch cpu"]
