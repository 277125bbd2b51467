"""ExecuTorch (.pte, XNNPACK): fp32 / int8 export of a tiny BERT, dynamic lengths, the mobile stage's gate, a bench row
through the real worker, and the one-line error when executorch is missing."""

import builtins
import dataclasses

import numpy as np
import pytest

pytest.importorskip("executorch.exir")

from edgekd.bench.cli import _positions, target_for  # noqa: E402
from edgekd.bench.config import BenchConfig  # noqa: E402
from edgekd.bench.core import run_benchmark  # noqa: E402
from edgekd.bench.inputs import synthetic  # noqa: E402
from edgekd.bench.stage import plan_targets  # noqa: E402
from edgekd.errors import ConfigError, DataError  # noqa: E402
from edgekd.mobile import executorch as et  # noqa: E402
from edgekd.mobile import stage as mobile_stage  # noqa: E402
from edgekd.mobile.config import MobileConfig  # noqa: E402
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir  # noqa: E402
from tests.unit.mobile_context import pytorch_student_context  # noqa: E402

MAX = 32


@pytest.fixture(scope="module")
def tiny(tmp_path_factory):
    """A 2-layer, 64-wide BERT, validation-like ids, PyTorch logits, and its fp32 and int8 .pte files."""
    folder = tmp_path_factory.mktemp("et")
    hf = make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2, initializer_range=0.2)
    tok = build_tokenizer(hf)
    ids = tok([t for t, _ in make_texts(64, seed=3)], truncation=True, max_length=MAX)["input_ids"]
    ref = mobile_stage._pytorch_logits(hf, ids, tok.pad_token_id)
    files = {p: et.export_pte(hf, folder / p, p, ids[:8], MAX) for p in ("fp32", "int8")}
    return hf, ids, ref, tok.pad_token_id, files


def test_fp32_and_int8_pte_give_the_pytorch_predictions_through_xnnpack(tiny):
    _, ids, ref, pad, files = tiny
    from executorch.runtime import Runtime

    assert "XnnpackBackend" in Runtime.get().backend_registry.registered_backend_names
    for precision, result in files.items():
        assert result.path.name == "model.pte" and result.file_bytes == result.path.stat().st_size
        assert result.delegate_segments >= 2  # the matrix work runs in XNNPACK (several segments: LayerNorm stays out)
        assert result.meta == {"delegate": "XNNPACK", "delegate_segments": result.delegate_segments, "max_length": MAX}
    fp32 = et.pte_logits(files["fp32"].path, ids, pad)
    assert np.abs(fp32 - ref).max() < 1e-4
    int8 = et.pte_logits(files["int8"].path, ids, pad)
    assert (int8.argmax(-1) == ref.argmax(-1)).mean() >= 0.9
    assert 1e-4 < np.abs(int8 - ref).max() < 0.5  # really quantized, still close
    assert files["int8"].file_bytes < files["fp32"].file_bytes


def test_one_pte_file_takes_every_length_up_to_its_maximum(tiny):
    hf, _, _, pad, files = tiny
    model = et.PteModel(files["fp32"].path, pad)
    assert model.max_length == MAX  # stored in the file as the constant method max_length
    rng = np.random.default_rng(0)
    rows = [rng.integers(7, 60, size=n).tolist() for n in (1, 2, 5, 17, MAX)]  # 1: padded up to the minimum of 2
    ref = mobile_stage._pytorch_logits(hf, rows, pad)
    got = np.stack([model(r) for r in rows])
    assert np.abs(got - ref).max() < 1e-4
    with pytest.raises(DataError, match=f"33 tokens is longer than the {MAX}"):
        model(list(range(7, 40)))




def test_stage_declares_pte_files_and_a_bench_row_runs_them(tiny, tmp_path, monkeypatch):
    hf, _, _, pad, _ = tiny
    ctx = pytorch_student_context(hf, pad, tmp_path, MAX)
    mobile_stage.run(MobileConfig(targets=["executorch"]), ctx)  # no ONNX in the run: the PyTorch student
    assert set(ctx.outputs) == {"student.pte", "student.int8.pte"}
    for name, art in ctx.outputs.items():
        m = ctx.metrics[name]
        assert (art.type, art.runtime, art.source, art.role) == ("pte", "executorch", "student", "student")
        assert art.precision == ("fp32" if name == "student.pte" else "int8-dynamic")
        assert art.meta["delegate"] == "XNNPACK" and art.meta["delegate_segments"] >= 2
        assert art.meta["max_length"] == MAX
        assert m["gate"] == "passed" and m["gate_against"] == "pytorch" and "agreement_vs_onnx" not in m
        assert (art.tokenizer / "tokenizer.json").is_file() and (art.path.parent / "config.json").is_file()
    assert ctx.metrics["student.pte"]["max_abs_diff_vs_pytorch"] < 1e-4
    assert "student.int8.pte: " in MobileConfig.summary(ctx.metrics)

    # The bench plans rows from the artifact type and runs them in the real worker process.
    targets = plan_targets({"student": ctx.artifacts["student"], **ctx.outputs}, BenchConfig(cuda="off"))
    rows = [t for t in targets if t.format == "pte"]
    assert {(t.runtime, t.precision) for t in rows} == {("executorch", "fp32"), ("executorch", "int8-dynamic")}
    assert rows[0].parameters == next(t for t in targets if t.format == "pytorch").parameters
    cfg = BenchConfig(rounds=2, warmup=1, turn_warmup=1, fixed_runs=2, fixed_length=16, threads=[1],
                      throughput_batch=4, throughput_batches=1, cuda="off")
    inputs = synthetic(60, 7, (2, MAX), 12, 16, 0, tmp_path)
    result = run_benchmark(rows, inputs, cfg)
    for row in result["rows"]:
        assert row["runtime"] == "executorch" and row["delegate"] == "XNNPACK"
        assert row["throughput_batching"] == "one text at a time"  # batch-1 file: its throughput row is a loop
        assert row["latency_ms"]["real_b1_t1"]["runs"] == 24 and row["latency_ms"]["fixed16_b1_t1"]["p50"] > 0

    # A file made from another model (same architecture, other weights) fails its gate and is not declared.
    other = make_tiny_model_dir(tmp_path / "other", seed=5, num_hidden_layers=2, initializer_range=0.2)
    real = mobile_stage.TARGETS["executorch"]
    wrong = dataclasses.replace(real, precisions=("fp32",),
                                convert=lambda model_dir, *a: real.convert(other, *a))
    monkeypatch.setitem(mobile_stage.TARGETS, "executorch", wrong)
    ctx = pytorch_student_context(hf, pad, tmp_path / "corrupt", MAX)
    mobile_stage.run(MobileConfig(targets=["executorch"]), ctx)
    assert ctx.metrics["student.pte"]["gate"].startswith("failed: argmax agreement with PyTorch")
    assert not ctx.outputs and not (ctx.out / "student.pte").exists()


def test_bench_cli_times_a_pte_file_in_the_real_worker(tiny, tmp_path):
    hf, _, _, pad, files = tiny
    folder = files["int8"].path.parent
    build_tokenizer(folder)  # as the mobile stage ships it: tokenizer and config.json beside the file
    (folder / "config.json").write_bytes((hf / "config.json").read_bytes())
    target = target_for(files["int8"].path)
    assert (target.runtime, target.format, target.pad_id) == ("executorch", "pte", pad)
    assert _positions(files["int8"].path) == MAX  # the file's own limit, below the 80-position table
    cfg = BenchConfig(rounds=1, warmup=1, turn_warmup=0, fixed_runs=1, fixed_length=8, threads=[1],
                      throughput_batch=2, throughput_batches=1, cuda="off")
    row = run_benchmark([target], synthetic(60, 7, (2, MAX), 6, 8, 0, tmp_path), cfg)["rows"][0]
    assert row["latency_ms"]["real_b1_t1"]["runs"] == 6 and row["file_bytes"] == files["int8"].file_bytes


def test_missing_executorch_is_one_line_naming_the_extra(tiny, tmp_path, monkeypatch):
    real_import = builtins.__import__

    def no_executorch(name, *args, **kwargs):
        if name.split(".")[0] == "executorch":
            raise ModuleNotFoundError(f"No module named '{name}'", name=name.split(".")[0])
        return real_import(name, *args, **kwargs)

    monkeypatch.setattr(builtins, "__import__", no_executorch)
    with pytest.raises(ConfigError) as info:
        et.export_pte(tiny[0], tmp_path / "x", "fp32", [], MAX)
    assert str(info.value) == ('the executorch target needs executorch (not installed); install it with '
                               'pip install "edgekd[executorch]"')
    ctx = pytorch_student_context(tiny[0], tiny[3], tmp_path, MAX)
    mobile_stage.run(MobileConfig(targets=["executorch"]), ctx)  # the stage skips it, naming the extra
    assert ctx.metrics["executorch"]["gate"].startswith("skipped: the executorch target needs executorch")
    assert 'pip install "edgekd[executorch]"' in MobileConfig.summary(ctx.metrics)
    assert not ctx.outputs and not list(ctx.out.glob("*.pte"))
