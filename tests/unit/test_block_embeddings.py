"""4-bit word embeddings (quantize.embedding_bits: 4) on a tiny exported BERT."""

import numpy as np
import onnx
import pytest
from onnx import numpy_helper

from edgekd.artifacts import Artifact
from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError
from edgekd.export.config import ExportConfig
from edgekd.export.core import export_onnx
from edgekd.models import load_classifier
from edgekd.ort import make_session, ort_logits
from edgekd.quantize import stage as quantize_stage
from edgekd.quantize.config import QuantizeConfig
from edgekd.quantize.core import make_quantizer
from edgekd.quantize.block_embeddings import (embedding_gathers, has_int4_table, int4_blocks, int8_blocks,
                                             with_block_embeddings)
from edgekd.stage_context import StageContext
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir
from tests.unit.test_quantize_guard import _write_splits

WORD = "/model/bert/embeddings/word_embeddings/Gather"
POSITION = "/model/bert/embeddings/position_embeddings/Gather"


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    folder = tmp_path_factory.mktemp("int4emb")
    model = load_classifier(str(make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2,
                                                    initializer_range=0.2)), attn_implementation="eager")
    fp32 = export_onnx(model, folder / "onnx", ExportConfig(exporter="torch")).path
    tok = build_tokenizer(folder / "onnx")
    ids = tok([t for t, _ in make_texts(64, seed=3)], truncation=True, max_length=32)["input_ids"]
    return fp32, ids, tok.pad_token_id, model.bert.embeddings.word_embeddings.weight.detach().numpy()


def _ops(path):
    graph = onnx.load(str(path)).graph
    inits = {t.name: t for t in graph.initializer}
    return graph, inits


def test_the_word_embedding_table_is_found_by_size(tiny):
    fp32, *_ = tiny
    # the word table is the largest, not the position (80 rows) or token-type (2 rows) tables; token types stay as they are
    assert embedding_gathers(fp32) == (WORD, [POSITION])


@pytest.mark.parametrize("mode", ["dynamic", "static"])
def test_word_table_becomes_4_bit_and_position_table_8_bit_blocks(tiny, tmp_path, mode):
    fp32, ids, pad, table = tiny
    graph, quantize = make_quantizer(fp32, tmp_path / "work", mode, "avx2", token_ids=ids[:16], pad_id=pad)
    int8 = quantize(tmp_path / "int8.onnx", []).path
    int4 = with_block_embeddings(graph, quantize)(tmp_path / "int4.onnx", []).path
    g, inits = _ops(int4)
    assert has_int4_table(int4) and not has_int4_table(int8)
    blocked = {dict((a.name, a.i) for a in n.attribute)["bits"]: n for n in g.node if n.op_type == "GatherBlockQuantized"}
    assert sorted(blocked) == [4, 8] and blocked[4].input[1] == "input_ids"
    # [vocab, hidden] as 4-bit pairs: hidden 64 in 4 blocks of 16, one fp16 scale per block, a Cast back to float
    rows, hidden = table.shape
    packed = numpy_helper.to_array(inits[blocked[4].input[0]])
    scales = numpy_helper.to_array(inits[blocked[4].input[2]])
    assert packed.dtype == np.uint8 and packed.shape == (rows, hidden // 2) and scales.shape == (rows, hidden // 16)
    assert scales.dtype == np.float16
    assert next(n for n in g.node if n.input and n.input[0] == blocked[4].output[0]).op_type == "Cast"
    # unpacked (low nibble first, zero point 8) x scale is the table to within a small error
    restored = _restore(packed, scales.astype(np.float32))
    assert np.sqrt(((restored - table) ** 2).mean()) < 0.12 * np.sqrt((table ** 2).mean())
    assert onnx.load(str(int4)).opset_import[0].version == onnx.load(str(int8)).opset_import[0].version
    # the position table: 8-bit blocks of 32 with zero point 128; the token-type table stays as int8 left it
    position = blocked[8]
    assert position.name.startswith(POSITION) and len(position.input) == 4
    assert numpy_helper.to_array(inits[position.input[3]]).tolist() == [[128, 128]] * 80
    assert [n.op_type for n in g.node if n.name.endswith("token_type_embeddings/Gather")] == ["Gather"]
    # the word table takes 4 + 1 bits a weight instead of int8's 8 (the tiny file as a whole shrinks less: its
    # position table, as large as its vocabulary here, gains a scale and a zero point per block of 32)
    assert packed.nbytes + scales.nbytes == rows * hidden * 5 // 8 and int4.stat().st_size < int8.stat().st_size
    # the 4-bit table still carries the model: predictions agree with the int8 model's
    a = ort_logits(make_session(int8), ids, pad).argmax(-1)
    b = ort_logits(make_session(int4), ids, pad).argmax(-1)
    assert (a == b).mean() >= 0.9


def test_int4_blocks_round_to_the_nearest_step_and_keep_zero_rows_zero():
    table = np.array([[0.0] * 32, [7.0, -7.0, 3.4, -3.6] + [0.0] * 28], dtype=np.float32)
    packed, scales = int4_blocks(table)
    assert scales.tolist() == [[0.0, 0.0], [1.0, 0.0]]  # every weight on the grid at max|w| / 7: no clipping pays
    assert packed[0].tolist() == [0x88] * 16  # zero point 8 in both nibbles
    assert packed[1, :2].tolist() == [(15 | 1 << 4), (11 | 4 << 4)]  # 7 -> 15, -7 -> 1, 3.4 -> 11, -3.6 -> 4


def _restore(packed, scales, block=16):
    nibbles = np.stack([packed & 15, packed >> 4], -1).reshape(len(packed), -1).astype(np.float32) - 8
    return nibbles * np.repeat(scales, block, axis=1)


def test_onnx_runtime_reads_the_blocks_exactly_as_written():
    """One GatherBlockQuantized node in ONNX Runtime against our own unpacking: same nibble order, zero point, scales."""
    from onnx import TensorProto, helper

    table = np.random.default_rng(0).normal(size=(50, 64)).astype(np.float32)
    packed, scales = int4_blocks(table)
    node = helper.make_node("GatherBlockQuantized", ["q", "ids", "s"], ["out"], domain="com.microsoft", gather_axis=0,
                            quantize_axis=1, block_size=16, bits=4)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(packed, "q"), numpy_helper.from_array(scales, "s")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    out = make_session_from_bytes(model.SerializeToString()).run(None, {"ids": np.arange(50)[None]})[0][0]
    assert np.abs(out - _restore(packed, scales)).max() == 0.0
    assert np.sqrt(((out - table) ** 2).mean() / (table ** 2).mean()) < 0.12  # and it is the table, nibbles in order


def make_session_from_bytes(model_bytes: bytes):
    import onnxruntime as ort

    return ort.InferenceSession(model_bytes, providers=["CPUExecutionProvider"])


def test_searched_scales_clip_an_outlier_when_that_lowers_the_error():
    rng = np.random.default_rng(0)
    table = rng.normal(size=(64, 64)).astype(np.float32)
    table[:, ::16] *= 6  # one large weight per block stretches max|w| / 7 steps for the 15 others
    packed, scales = int4_blocks(table)
    err = ((_restore(packed, scales) - table) ** 2).sum()
    plain = np.abs(table.reshape(64, 4, 16)).max(-1) / 7
    plain_err = ((np.clip(np.round(table / np.repeat(plain, 16, 1)), -8, 7) * np.repeat(plain, 16, 1) - table) ** 2).sum()
    assert err < 0.9 * plain_err and (scales < plain - 1e-9).any()


def test_excluding_the_word_table_keeps_it_float(tiny, tmp_path):
    fp32, ids, pad, table = tiny
    graph, quantize = make_quantizer(fp32, tmp_path / "work", "dynamic", "avx2")
    path = with_block_embeddings(graph, quantize)(tmp_path / "kept.onnx", [WORD]).path
    g, inits = _ops(path)
    node = next(n for n in g.node if n.name == WORD)
    assert node.op_type == "Gather" and np.array_equal(numpy_helper.to_array(inits[node.input[0]]), table)
    assert not has_int4_table(path)  # so the quantize stage records embedding_bits 8 for this file
    assert [n.name for n in g.node if n.op_type == "GatherBlockQuantized"] == [f"{POSITION}_q8"]  # still blocked


def test_stage_records_4_bit_embeddings_and_writes_a_smaller_file(tiny, tmp_path):
    fp32, _, pad, _ = tiny
    tok = build_tokenizer(tmp_path / "tok")
    data = _write_splits(tmp_path / "data", fp32, pad, tok)
    source = Artifact(name="student.onnx", type="onnx", path=fp32, role="student", tokenizer=fp32.parent, pad_id=pad,
                      task="text-classification")
    sizes = {}
    for bits in (8, 4):
        ctx = StageContext(settings={"max_length": 32}, out=tmp_path / f"out{bits}", data_dir=data,
                           artifacts={"student.onnx": source})
        quantize_stage.run(QuantizeConfig(modes=["dynamic"], embedding_bits=bits), ctx)
        m = ctx.metrics["student.int8-dynamic"]
        sizes[bits] = m["file_bytes"]
        assert ctx.outputs["student.int8-dynamic.onnx"].meta["embedding_bits"] == bits
        assert m.get("embedding_bits", 8) == bits and m["validation"]["accuracy"] >= 0.9
    assert sizes[4] < sizes[8]
    assert "4-bit word embeddings" in QuantizeConfig.summary(ctx.metrics)


def test_embedding_bits_is_validated_and_left_out_of_dumps_at_its_default():
    stages = [{"kind": "teacher"}, {"kind": "export", "models": ["teacher"]}]
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": [*stages, {"kind": "quantize", "models": ["teacher"], "embedding_bits": 2}]})
    assert "stages.2.quantize.embedding_bits" in str(info.value)
    assert "embedding_bits" not in QuantizeConfig().model_dump()  # cache keys of existing runs unchanged
    assert QuantizeConfig(embedding_bits=4).model_dump()["embedding_bits"] == 4


def test_int8_blocks_follow_each_row_where_one_scale_per_table_cannot():
    """Position embeddings: rows of very different size. Per-block scales keep the small rows; ORT reads them exactly."""
    from onnx import TensorProto, helper

    rng = np.random.default_rng(1)
    table = (rng.normal(size=(96, 64)) * np.geomspace(0.01, 1.0, 96)[:, None]).astype(np.float32)
    q, scales = int8_blocks(table)
    assert q.dtype == np.uint8 and scales.shape == (96, 2)
    restored = (q.astype(np.float32) - 128) * np.repeat(scales, 32, axis=1)
    one = np.abs(table).max() / 127  # int8 with one scale for the whole table, as quantize_dynamic stores it
    per_tensor = np.clip(np.round(table / one), -127, 127) * one
    small = slice(0, 24)  # the rows far below the table's largest weight
    assert np.abs(restored - table)[small].max() < 0.05 * np.abs(per_tensor - table)[small].max()
    node = helper.make_node("GatherBlockQuantized", ["q", "ids", "s", "zp"], ["out"], domain="com.microsoft",
                            gather_axis=0, quantize_axis=1, block_size=32, bits=8)
    graph = helper.make_graph([node], "g", [helper.make_tensor_value_info("ids", TensorProto.INT64, [1, None])],
                              [helper.make_tensor_value_info("out", TensorProto.FLOAT, None)],
                              initializer=[numpy_helper.from_array(q, "q"), numpy_helper.from_array(scales, "s"),
                                           numpy_helper.from_array(np.full(scales.shape, 128, np.uint8), "zp")])
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17), helper.make_opsetid("com.microsoft", 1)])
    model.ir_version = 8
    out = make_session_from_bytes(model.SerializeToString()).run(None, {"ids": np.arange(96)[None]})[0][0]
    assert np.abs(out - restored).max() < 1e-6
