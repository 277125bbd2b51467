"""LiteRT (.tflite, length-bucket signatures): fp32 / int8 conversion of a tiny BERT, every bucket, the mobile stage's
gate, a bench row through the real worker, and the one-line error when LiteRT is missing."""

import builtins
import dataclasses

import numpy as np
import pytest

pytest.importorskip("litert_torch")
pytest.importorskip("ai_edge_litert.interpreter")

from edgekd.bench.cli import _positions, target_for  # noqa: E402
from edgekd.bench.config import BenchConfig  # noqa: E402
from edgekd.bench.core import run_benchmark  # noqa: E402
from edgekd.bench.inputs import synthetic  # noqa: E402
from edgekd.bench.stage import plan_targets  # noqa: E402
from edgekd.errors import ConfigError, DataError  # noqa: E402
from edgekd.mobile import litert  # noqa: E402
from edgekd.mobile import stage as mobile_stage  # noqa: E402
from edgekd.mobile.config import MobileConfig  # noqa: E402
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir  # noqa: E402
from tests.unit.mobile_context import pytorch_student_context  # noqa: E402

MAX = 40
BUCKETS = (16, 32, 64)  # -> 16, 32, 40: the bucket above max_length is dropped, max_length is the last


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer, 64-wide BERT, validation-like ids, PyTorch logits, and its fp32 and int8 .tflite files."""
    folder = tmp_path_factory.mktemp("litert")
    hf = make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2, initializer_range=0.2)
    tok = build_tokenizer(hf)
    ids = tok([t for t, _ in make_texts(64, seed=3)], truncation=True, max_length=MAX)["input_ids"]
    ref = mobile_stage._pytorch_logits(hf, ids, tok.pad_token_id)
    files = {p: litert.export_tflite(hf, folder / p, p, MAX, BUCKETS) for p in ("fp32", "int8")}
    return hf, ids, ref, tok.pad_token_id, files


def test_bucket_lengths_end_at_max_length():
    assert litert.bucket_lengths(128) == [32, 64, 128]
    assert litert.bucket_lengths(100) == [32, 64, 100]
    assert litert.bucket_lengths(512) == [32, 64, 128, 512]
    assert litert.bucket_lengths(MAX, BUCKETS) == [16, 32, 40]


def test_fp32_and_int8_tflite_give_the_pytorch_predictions(tiny):
    _, ids, ref, pad, files = tiny
    for result in files.values():
        assert result.path.name == "model.tflite" and result.path.read_bytes()[4:8] == b"TFL3"
        assert result.buckets == [16, 32, 40] and result.meta["delegate"] == "XNNPACK"
    fp32 = litert.tflite_logits(files["fp32"].path, ids, pad)
    assert np.abs(fp32 - ref).max() < 1e-4
    int8 = litert.tflite_logits(files["int8"].path, ids, pad)
    assert (int8.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    assert 1e-4 < np.abs(int8 - ref).max() < 0.5  # really quantized, still close
    assert files["int8"].file_bytes < 0.8 * files["fp32"].file_bytes  # (tiny: the graph weighs as much as the weights)


def test_every_bucket_gives_the_unpadded_logits(tiny):
    hf, _, _, pad, files = tiny
    model = litert.TfliteModel(files["fp32"].path, pad)
    rng = np.random.default_rng(0)
    # each bucket's edge and a length inside it: 16 and 9 run in len16, 17 and 32 in len32, 33 and 40 in len40
    rows = [rng.integers(7, 60, size=n).tolist() for n in (9, 16, 17, 32, 33, 40)]
    ref = mobile_stage._pytorch_logits(hf, rows, pad)
    assert np.abs(np.stack([model(r) for r in rows]) - ref).max() < 1e-4
    with pytest.raises(DataError, match="41 tokens is longer than its largest bucket"):
        model(list(range(7, 48)))




def test_stage_declares_tflite_files_and_a_bench_row_runs_them(tiny, tmp_path, monkeypatch):
    hf, _, _, pad, _ = tiny
    ctx = pytorch_student_context(hf, pad, tmp_path, MAX)
    mobile_stage.run(MobileConfig(targets=["litert"]), ctx)  # no ONNX in the run: the PyTorch student
    assert set(ctx.outputs) == {"student.tflite", "student.int8.tflite"}
    for name, art in ctx.outputs.items():
        m = ctx.metrics[name]
        assert (art.type, art.runtime, art.source, art.role) == ("tflite", "litert", "student", "student")
        assert art.precision == ("fp32" if name == "student.tflite" else "int8-dynamic")
        assert art.meta["buckets"] == [32, MAX] and art.meta["delegate"] == "XNNPACK"
        assert m["gate"] == "passed" and m["gate_against"] == "pytorch" and "agreement_vs_onnx" not in m
        assert (art.tokenizer / "tokenizer.json").is_file() and (art.path.parent / "config.json").is_file()
    assert ctx.metrics["student.tflite"]["max_abs_diff_vs_pytorch"] < 1e-4

    targets = plan_targets({"student": ctx.artifacts["student"], **ctx.outputs}, BenchConfig(cuda="off"))
    rows = [t for t in targets if t.format == "tflite"]
    assert {(t.runtime, t.precision) for t in rows} == {("litert", "fp32"), ("litert", "int8-dynamic")}
    cfg = BenchConfig(rounds=2, warmup=1, turn_warmup=1, fixed_runs=2, fixed_length=16, threads=[1],
                      throughput_batch=4, throughput_batches=1, cuda="off")
    result = run_benchmark(rows, synthetic(60, 7, (2, MAX), 12, 16, 0, tmp_path), cfg)
    for row in result["rows"]:
        assert row["runtime"] == "litert" and row["buckets"] == [32, MAX]
        assert row["latency_ms"]["real_b1_t1"]["runs"] == 24 and row["latency_ms"]["fixed16_b1_t1"]["p50"] > 0

    other = make_tiny_model_dir(tmp_path / "other", seed=5, num_hidden_layers=2, initializer_range=0.2)
    real = mobile_stage.TARGETS["litert"]
    wrong = dataclasses.replace(real, precisions=("fp32",), convert=lambda model_dir, *a: real.convert(other, *a))
    monkeypatch.setitem(mobile_stage.TARGETS, "litert", wrong)
    ctx = pytorch_student_context(hf, pad, tmp_path / "corrupt", MAX)
    mobile_stage.run(MobileConfig(targets=["litert"]), ctx)
    assert ctx.metrics["student.tflite"]["gate"].startswith("failed: argmax agreement with PyTorch")
    assert not ctx.outputs and not (ctx.out / "student.tflite").exists()


def test_bench_cli_times_a_tflite_file_in_the_real_worker(tiny, tmp_path):
    hf, _, _, pad, files = tiny
    folder = files["int8"].path.parent
    build_tokenizer(folder)  # as the mobile stage ships it: tokenizer and config.json beside the file
    (folder / "config.json").write_bytes((hf / "config.json").read_bytes())
    target = target_for(files["int8"].path)
    assert (target.runtime, target.format, target.pad_id) == ("litert", "tflite", pad)
    assert _positions(files["int8"].path) == MAX  # its largest bucket, below the 80-position table
    cfg = BenchConfig(rounds=1, warmup=1, turn_warmup=0, fixed_runs=1, fixed_length=8, threads=[1],
                      throughput_batch=2, throughput_batches=1, cuda="off")
    row = run_benchmark([target], synthetic(60, 7, (2, MAX), 6, 8, 0, tmp_path), cfg)["rows"][0]
    assert row["latency_ms"]["real_b1_t1"]["runs"] == 6 and row["file_bytes"] == files["int8"].file_bytes


def test_missing_litert_is_one_line_naming_the_extra(tiny, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_litert(name, *args, **kwargs):
        if name.split(".")[0] in ("litert_torch", "ai_edge_litert", "ai_edge_quantizer"):
            raise ModuleNotFoundError(f"No module named '{name}'", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_litert)
    with pytest.raises(ConfigError) as info:
        litert.export_tflite(tiny[0], tmp_path / "x", "fp32", MAX)
    assert str(info.value) == ('the litert target needs ai_edge_litert (not installed); install it with '
                               'pip install "edgekd[litert]"')
    with pytest.raises(ConfigError, match=r"edgekd\[litert\]"):  # the bench runner too
        litert.TfliteModel(tiny[4]["fp32"].path, 0)
    ctx = pytorch_student_context(tiny[0], tiny[3], tmp_path, MAX)
    mobile_stage.run(MobileConfig(targets=["litert"]), ctx)  # the stage skips it, naming the extra
    assert ctx.metrics["litert"]["gate"].startswith("skipped: the litert target needs ai_edge_litert")
    assert 'pip install "edgekd[litert]"' in MobileConfig.summary(ctx.metrics)
    assert not ctx.outputs and not list(ctx.out.glob("*.tflite"))
