"""The tiny causal-LM pipeline with a bench stage appended: rows from artifacts, paired speed-ups, quality."""

import json

import pytest

from edgekd.pipeline import run_pipeline
from tests.integration.test_causal_lm_pipeline import LM_STAGES, docs, write_lm_pipeline  # noqa: F401 (fixture)
from tests.lm_fixtures import make_tiny_causal_lm_dir

BENCH = {"kind": "bench", "rounds": 2, "threads": [1], "max_other_cpu": 1.0, "cuda": "off",
         "lm": {"prompts": 2, "prompt_tokens": 8, "new_tokens": 8, "eval_windows": 4, "warmup": 1}}


def test_bench_stage_measures_every_language_model(tmp_path, docs):  # noqa: F811
    pytest.importorskip("optimum.exporters.onnx")
    model_dir = make_tiny_causal_lm_dir(tmp_path / "model", "llama")
    config = write_lm_pipeline(tmp_path / "p.yaml", model_dir, docs, tmp_path / "runs", stages=LM_STAGES + (BENCH, {"kind": "report"}))
    result = run_pipeline(config)
    bench_dir = next(result.run_dir.glob("0*-bench-*"))
    bench = json.loads((bench_dir / "bench.json").read_text())
    rows = {r["name"]: r for r in bench["rows"]}
    expected = {"teacher pytorch cpu", "student pytorch cpu", "teacher onnxruntime cpu", "student onnxruntime cpu",
                "student.int8-dynamic onnxruntime cpu", "student.int4 onnxruntime cpu"}
    # the generation bundle (deploy/edgekd_generate.py), the ONNX Runtime GenAI peer, the non-distilled student,
    # and the bundle's GenAI build of the student (lm.genai)
    expected |= {"bundle (edgekd_generate)", "peer.genai-int4 onnxruntime-genai",
                 "student-hard-labels pytorch cpu", "bundle.genai-int4 onnxruntime-genai"}
    assert set(rows) == expected
    assert bench["references"] == ["teacher onnxruntime cpu", "teacher pytorch cpu", "peer.genai-int4 onnxruntime-genai"]
    ablation = rows["student-hard-labels pytorch cpu"]
    assert ablation["rounds"] == 0 and ablation["perplexity"] > 0  # scored on the test windows, not timed
    assert bench["agreement_reference"] == "teacher pytorch cpu"
    assert list(rows)[:2] == ["teacher pytorch cpu", "teacher onnxruntime cpu"]  # teacher rows first
    key = "p8_n8_t1"
    for row in (r for r in rows.values() if r["role"] != "ablation"):
        assert row["rounds"] == 2 and len(row["decode_tokens_per_s"][key]["rounds"]) == 2
        assert set(row["speedup_vs"]) == set(bench["references"]) and row["perplexity"] > 1
        assert row["eval_tokens"] == 4 * 31 and not row["path"].startswith("/")
    for name in ("teacher", "student"):  # one model in two runtimes: the same quality
        onnx, torch_row = rows[f"{name} onnxruntime cpu"], rows[f"{name} pytorch cpu"]
        assert onnx["perplexity"] == pytest.approx(torch_row["perplexity"], rel=1e-3)
        assert onnx["precision"] == "fp32" and onnx["parameters"] == torch_row["parameters"]
    assert rows["teacher onnxruntime cpu"]["agreement_with_teacher"] >= 0.99
    assert rows["student.int4 onnxruntime cpu"]["file_bytes"] < rows["student onnxruntime cpu"]["file_bytes"]
    assert rows["student pytorch cpu"]["parameters"] < rows["teacher pytorch cpu"]["parameters"]
    # the bundle runs the same ONNX file as its source row through the same decode loop: the same tokens
    row = rows["bundle (edgekd_generate)"]
    bundle = next(s for s in LM_STAGES if s["kind"] == "bundle")
    source = rows[f"{bundle['model'].removesuffix('.onnx')} onnxruntime cpu"]
    assert row["greedy_tokens"] == source["greedy_tokens"] and row["perplexity"] == source["perplexity"]
    assert row["format"] == "bundle" and row["parameters"] == rows["student pytorch cpu"]["parameters"]
    genai = rows["bundle.genai-int4 onnxruntime-genai"]
    assert (genai["role"], genai["format"], genai["runtime"], genai["precision"]) == (
        "student", "genai", "onnxruntime-genai", "int4")
    assert genai["parameters"] == rows["student pytorch cpu"]["parameters"] < rows["teacher pytorch cpu"]["parameters"]
    assert genai["file_bytes"] < rows["peer.genai-int4 onnxruntime-genai"]["file_bytes"]  # the pruned student
    assert result.artifacts["bench.json"].path.is_file()
    # The report: the shipped (bundled) student against the teacher on ONNX Runtime and the peer, paired.
    report = json.loads(result.artifacts["report.json"].path.read_text())
    h = report["headline"]
    assert report["schema"] == "edgekd.report-lm/v1" and h["student"] == "student.int4 onnxruntime cpu"
    student, teacher = rows[h["student"]], rows[h["teacher_onnxruntime"]]
    assert h["decode_speedup_vs_onnxruntime"]["median"] == \
        student["speedup_vs"][teacher["name"]][key]["decode_tokens_per_s"]["median"]
    assert h["size_ratio"] == round(teacher["file_bytes"] / student["file_bytes"], 2)
    assert h["perplexity_ratio"] == round(student["perplexity"] / teacher["perplexity"], 3)
    assert h["peer"] == "peer.genai-int4 onnxruntime-genai" and h["decode_speedup_vs_peer"]["n"] == 2
    assert h["ablation"]["non_distilled"] == "student-hard-labels pytorch cpu"
    # The same student built by ONNX Runtime GenAI, against the same references (one helper builds both blocks).
    g = h["genai_student"]
    assert g["name"] == "bundle.genai-int4 onnxruntime-genai" and g["decode_speedup_vs_peer"]["n"] == 2
    assert g["decode_speedup_vs_peer"]["median"] == \
        genai["speedup_vs"]["peer.genai-int4 onnxruntime-genai"][key]["decode_tokens_per_s"]["median"]
    assert g["size_ratio_vs_peer"] == round(rows[h["peer"]]["file_bytes"] / genai["file_bytes"], 2) > 1
    assert g["perplexity_ratio"] == round(genai["perplexity"] / teacher["perplexity"], 3)
    markdown = result.artifacts["report.md"].path.read_text()
    assert "decodes" in markdown and "ONNX Runtime GenAI" in markdown and "cross-entropy alone" in markdown
    assert "The same student built by ONNX Runtime GenAI's model builder (`bundle.genai-int4 onnxruntime-genai`, " \
        "the peer's runtime and precision" in markdown
    assert result.artifacts["report.png"].path.stat().st_size > 10_000
    from edgekd.report.core import rebuild_report

    assert rebuild_report(result.run_dir).read_text().startswith("# edgekd report: tiny-lm (causal LM)")
    again = run_pipeline(config)
    assert [s.status for s in again.stages][-1] == "skipped"


def test_bench_stage_on_a_teacher_only_run(tmp_path, docs):  # noqa: F811
    """No export (runs without optimum, on both transformers legs): one PyTorch row, its own reference."""
    from tests.integration.test_causal_lm_pipeline import TEACHER

    model_dir = make_tiny_causal_lm_dir(tmp_path / "model", "qwen2")
    config = write_lm_pipeline(tmp_path / "p.yaml", model_dir, docs, tmp_path / "runs", stages=(TEACHER, BENCH))
    result = run_pipeline(config)
    bench = json.loads(result.artifacts["bench.json"].path.read_text())
    (row,) = bench["rows"]
    assert row["name"] == "teacher pytorch cpu" and bench["references"] == ["teacher pytorch cpu"]
    assert row["agreement_with_teacher"] == 1.0 and row["speedup_vs"]["teacher pytorch cpu"]["p8_n8_t1"][
        "decode_tokens_per_s"]["median"] == 1.0
    manifest = json.loads(next(result.run_dir.glob("0*-bench-*/manifest.json")).read_text())
    assert manifest["config"]["lm"]["new_tokens"] == 8
