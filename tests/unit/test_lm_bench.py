"""The causal-LM benchmark: worker processes per model, paired decode/prefill speed-ups, quality, the CLI."""

import json

import numpy as np
import pytest

from edgekd.bench.config import BenchConfig, LMBenchConfig
from edgekd.bench.core import Target
from edgekd.bench.lm_core import run_lm_benchmark
from edgekd.bench.lm_inputs import from_documents
from edgekd.bench.lm_stage import agreement_reference, lm_references, onnx_bytes
from tests.lm_fixtures import build_lm_tokenizer, make_documents, tiny_causal_lm_config

# BenchConfig().model_dump() at the commit before the LM workload existed: it feeds every classification bench
# cache key, so it must not change.
CLASSIFIER_DUMP = {
    "kind": "bench", "rounds": 5, "sample": None, "warmup": 10, "turn_warmup": 5, "fixed_length": 128,
    "fixed_runs": 20, "throughput_batch": 32, "throughput_batches": 4, "threads": [1, 0],
    "length_buckets": [16, 32, 64], "eval_batch_size": 64, "max_other_cpu": 0.1, "strict": False, "bundle": True,
    "cuda": "auto"}


def test_classifier_dump_is_unchanged_and_lm_fields_are_task_checked():
    assert BenchConfig().model_dump(mode="json") == CLASSIFIER_DUMP
    assert BenchConfig().model_dump() == CLASSIFIER_DUMP
    lm = BenchConfig(lm={"prompts": 2, "new_tokens": 4})
    assert lm.model_dump()["lm"]["prompts"] == 2 and lm.lm_settings().prompt_tokens == 64
    assert BenchConfig().task_problem("text-classification") is None
    assert BenchConfig(lm={}).task_problem("text-classification") == "lm applies to task causal-lm only"
    assert "fixed_length, warmup apply to text-classification only" in \
        BenchConfig(fixed_length=64, warmup=3).task_problem("causal-lm")
    assert BenchConfig(rounds=2, lm={}).task_problem("causal-lm") is None

    class Pipeline:  # the lead's hook passes the PipelineConfig
        task = "causal-lm"

    assert BenchConfig(sample=4).task_problem(Pipeline()).startswith("sample apply")
    with pytest.raises(ValueError, match="new_tokens"):
        LMBenchConfig(new_tokens=1)


@pytest.fixture(scope="module")
def lm_files(tmp_path_factory):
    """A tiny random Llama (large init: distinct logits, so greedy ties cannot flip) and its fp32 / int4 ONNX."""
    pytest.importorskip("optimum.exporters.onnx")
    import torch
    from transformers import AutoModelForCausalLM

    from edgekd.export.causal_lm import export_causal_lm
    from edgekd.quantize.causal_lm import quantize_causal_lm

    root = tmp_path_factory.mktemp("lmbench")
    torch.manual_seed(0)
    config = tiny_causal_lm_config("llama")
    config.initializer_range = 0.4
    model_dir = root / "teacher"
    AutoModelForCausalLM.from_config(config).save_pretrained(model_dir)
    tok = build_lm_tokenizer(model_dir)
    onnx_path = export_causal_lm(model_dir, root / "onnx")
    tok.save_pretrained(root / "onnx")
    int4 = root / "int4" / "model.onnx"
    quantize_causal_lm(onnx_path, int4, "int4", block_size=16)
    tok.save_pretrained(int4.parent)
    return {"hf": model_dir, "onnx": onnx_path, "int4": int4, "tokenizer": model_dir}


def _targets(files) -> list[Target]:
    return [Target(name="teacher onnxruntime cpu", path=files["onnx"], runtime="onnxruntime", pad_id=0,
                   model="teacher", role="teacher", file_bytes=onnx_bytes(files["onnx"])),
            Target(name="teacher pytorch cpu", path=files["hf"], runtime="pytorch", pad_id=0, model="teacher",
                   role="teacher", format="pytorch"),
            Target(name="teacher.int4 onnxruntime cpu", path=files["int4"], runtime="onnxruntime", pad_id=0,
                   model="teacher", role="student", precision="int4", file_bytes=onnx_bytes(files["int4"]))]


def test_lm_bench_rows_parity_and_paired_speedups(lm_files, tmp_path):
    cfg = BenchConfig(rounds=3, threads=[1], max_other_cpu=1.0,
                      lm={"prompts": 2, "prompt_tokens": 8, "new_tokens": 6, "eval_windows": 3, "warmup": 1})
    inputs = from_documents(lm_files["tokenizer"], make_documents(40), 16, cfg.lm_settings(), 0, tmp_path, "docs")
    with np.load(inputs.npz) as data:
        assert data["prompts"].shape == (2, 8) and data["windows"].shape == (3, 16)
    targets = _targets(lm_files)
    refs = lm_references(targets)
    assert refs == ["teacher onnxruntime cpu", "teacher pytorch cpu"]
    assert agreement_reference(targets) == "teacher pytorch cpu"
    result = run_lm_benchmark(targets, inputs, cfg, refs, agreement_reference(targets))
    rows = {r["name"]: r for r in result["rows"]}
    key = "p8_n6_t1"
    assert result["settings"] == [key]
    onnx, torch_row, int4 = rows["teacher onnxruntime cpu"], rows["teacher pytorch cpu"], rows[
        "teacher.int4 onnxruntime cpu"]
    for row in rows.values():
        for field in ("name", "model", "role", "format", "precision", "runtime", "device", "file_bytes", "load_s",
                      "peak_rss_mb", "perplexity", "next_token_accuracy", "agreement_with_teacher", "speedup_vs"):
            assert field in row, (row["name"], field)
        assert row["rounds"] == 3 and row["prefill_ms"][key]["runs"] == 3 * 2 and row["ttft_ms"][key]["p50"] > 0
        rate = row["decode_tokens_per_s"][key]
        assert len(rate["rounds"]) == 3 and rate["low"] <= rate["median"] <= rate["high"] and rate["median"] > 0
        # EOS is ignored: every prompt decoded exactly new_tokens tokens.
        assert [len(ids) for ids in row["greedy_tokens"]] == [6, 6]
        assert row["peak_rss_mb"] > 10
    # The fp32 ONNX file and PyTorch are the same model: same greedy tokens, same perplexity.
    assert onnx["greedy_tokens"] == torch_row["greedy_tokens"]
    assert onnx["perplexity"] == pytest.approx(torch_row["perplexity"], rel=1e-3)
    assert onnx["agreement_with_teacher"] == 1.0 and torch_row["agreement_with_teacher"] == 1.0
    assert int4["file_bytes"] < onnx["file_bytes"] and int4["perplexity"] != onnx["perplexity"]
    # Paired: one ratio per round, each from the same round of both rows.
    ref_rates = onnx["decode_tokens_per_s"][key]["rounds"]
    pair = int4["speedup_vs"]["teacher onnxruntime cpu"][key]
    expected = [round(a / b, 4) for a, b in zip(int4["decode_tokens_per_s"][key]["rounds"], ref_rates)]
    assert pair["decode_tokens_per_s"]["rounds"] == expected and pair["decode_tokens_per_s"]["n"] == 3
    ref_prefill = onnx["rounds_prefill_p50_ms"][key]
    assert pair["prefill"]["rounds"] == [round(a / b, 4) for a, b in
                                         zip(ref_prefill, int4["rounds_prefill_p50_ms"][key])]
    assert onnx["speedup_vs"]["teacher onnxruntime cpu"][key]["decode_tokens_per_s"]["median"] == 1.0
    json.dumps(result)  # the whole result is JSON


def test_edgekd_bench_on_an_lm_onnx_file_prints_a_table(lm_files, tmp_path, capsys):
    from edgekd.cli import main

    out = tmp_path / "bench.json"
    assert main(["bench", str(lm_files["onnx"]), str(lm_files["int4"]), "--rounds", "2", "--threads", "1",
                 "--max-other-cpu", "1.0", "--max-length", "16", "--out", str(out)]) == 0
    printed = capsys.readouterr().out
    assert "decode tok/s" in printed and "onnx/model.onnx onnxruntime cpu" in printed and "int4/model.onnx" in printed
    result = json.loads(out.read_text())
    assert result["schema"] == "edgekd.bench-lm/v1" and len(result["rows"]) == 2
    assert [r["precision"] for r in result["rows"]] == ["fp32", "int4"]
    assert result["inputs"]["describe"].startswith("8 synthetic prompts")
    int4 = result["rows"][1]
    assert "onnx/model.onnx onnxruntime cpu" in int4["speedup_vs"] and int4["agreement_with_teacher"] is not None


def test_lm_cli_detection_and_flags(lm_files, tmp_path):
    import argparse

    from edgekd.bench.lm_cli import add_lm_arguments, is_causal_lm
    from tests.conftest import make_tiny_model_dir

    assert is_causal_lm(lm_files["onnx"]) and is_causal_lm(lm_files["hf"])
    assert not is_causal_lm(make_tiny_model_dir(tmp_path / "bert", "bert"))
    parser = argparse.ArgumentParser()
    add_lm_arguments(parser)
    args = parser.parse_args(["--prompt-tokens", "12", "--new-tokens", "3"])
    assert (args.prompts, args.prompt_tokens, args.new_tokens, args.eval_windows) == (8, 12, 3, 16)


def test_pytorch_rows_alone_pair_and_agree(tmp_path):
    """Runs on both transformers legs (no optimum): two PyTorch LMs, agreement against the first."""
    import torch
    from transformers import AutoModelForCausalLM

    dirs = []
    for seed in (0, 1):
        torch.manual_seed(seed)
        config = tiny_causal_lm_config("llama")
        config.initializer_range = 0.4
        AutoModelForCausalLM.from_config(config).save_pretrained(tmp_path / f"m{seed}")
        build_lm_tokenizer(tmp_path / f"m{seed}")
        dirs.append(tmp_path / f"m{seed}")
    cfg = BenchConfig(rounds=2, threads=[1], max_other_cpu=1.0,
                      lm={"prompts": 1, "prompt_tokens": 4, "new_tokens": 3, "eval_windows": 2, "warmup": 0})
    inputs = from_documents(dirs[0], make_documents(20), 12, cfg.lm_settings(), 0, tmp_path, "docs")
    targets = [Target(name=f"m{i} pytorch cpu", path=d, runtime="pytorch", pad_id=0, role="teacher" if i == 0
                      else "student", format="pytorch") for i, d in enumerate(dirs)]
    result = run_lm_benchmark(targets, inputs, cfg, ["m0 pytorch cpu"], "m0 pytorch cpu")
    first, second = result["rows"]
    assert first["agreement_with_teacher"] == 1.0 and 0.0 <= second["agreement_with_teacher"] < 1.0
    assert len(second["speedup_vs"]["m0 pytorch cpu"]["p4_n3_t1"]["prefill"]["rounds"]) == 2
    assert first["perplexity"] != second["perplexity"] and len(first["greedy_tokens"][0]) == 3
