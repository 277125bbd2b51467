"""benchmarks/lm_frontier.py end to end on a tiny finished causal-lm run: each point pruned to its shape, distilled
for its steps, built with ONNX Runtime GenAI's builder at int4, timed against the peer in the same rounds; resume
and one-line errors."""

import json

import pytest

from edgekd.pipeline import run_pipeline
from tests.conftest import load_benchmark_script
from tests.integration.test_causal_lm_pipeline import LM_STAGES, write_lm_pipeline
from tests.lm_fixtures import make_tiny_causal_lm_dir, write_documents

pytest.importorskip("onnxruntime_genai")


def _script():
    return load_benchmark_script("lm_frontier")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm-frontier")
    model_dir = make_tiny_causal_lm_dir(tmp / "model", "llama")  # 2 layers, FFN 128
    stages = [s for s in LM_STAGES if s["kind"] in ("teacher", "prune", "distill", "peer")]
    config = write_lm_pipeline(tmp / "p.yaml", model_dir, write_documents(tmp / "docs", 80), tmp / "runs",
                               stages=stages)
    return run_pipeline(config).run_dir


@pytest.fixture(scope="module")
def result(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    args = [str(tiny_run), "--points", "1x0.5@3", "2x0@0", "--rounds", "2", "--eval-windows", "4",
            "--new-tokens", "6", "--out", str(out), "--work", str(out / "work")]
    assert _script().main(args) == 0
    return out, args


def test_each_point_has_its_shape_budget_and_paired_speed(result):
    out, _ = result
    (path,) = out.glob("*-lm-frontier.json")
    data = json.loads(path.read_text())
    assert data["schema"] == "edgekd.lm-frontier/v1" and data["teacher"]["layers"] == 2
    small, full = data["points"]
    # 1 layer, FFN 128 -> 64 (multiple_of 8), 3 steps of the distill stage's batch; 2 layers untouched, no training.
    assert (small["layers"], small["ffn_after"], small["steps"]) == (1, 64, 3)
    assert small["tokens_seen"] == 3 * 8 * data["max_length"]
    assert small["validation_perplexity"] != small["pruned_validation_perplexity"]  # it trained (3 steps)
    assert (full["layers"], full["ffn_after"], full["steps"], full["train_seconds"]) == (2, 128, 0, 0.0)
    # Untrained and unpruned, the "student" is the teacher: the same test perplexity in PyTorch.
    assert full["test_perplexity"] == pytest.approx(data["teacher"]["test_perplexity"], rel=1e-4)
    assert full["perplexity_ratio"] == pytest.approx(1.0, abs=1e-3)
    assert small["parameters"] < full["parameters"]
    # The GenAI build is the point's student: its layer count, and a smaller file for the smaller model.
    work = next((out / "work").iterdir())
    config = json.loads((work / "1x0.5-at-3" / "genai-int4" / "genai_config.json").read_text())
    assert config["model"]["decoder"]["num_hidden_layers"] == 1
    assert small["int4_file_bytes"] < full["int4_file_bytes"]
    for p in data["points"]:  # speed-up: the median of per-round ratios against the peer timed in the same rounds
        ratios = sorted(s / q for s, q in zip(p["per_round"], data["peer"]["per_round"]))
        assert len(ratios) == 2 and p["speedup_vs_peer"]["min"] == ratios[0] and p["speedup_vs_peer"]["max"] == ratios[1]
        assert p["int4_perplexity_ratio"] == pytest.approx(p["int4_test_perplexity"] / data["teacher"]["test_perplexity"],
                                                           abs=1e-4)
        assert p["meets_goal"] == (p["int4_perplexity_ratio"] <= 1.5 and p["speedup_vs_peer"]["median"] >= 1.5)
    md = path.with_suffix(".md").read_text()
    assert "| 1 layers, FFN 64 (3 steps) |" in md and "Points meeting both" in md


def test_a_rerun_reuses_trained_points_and_retimes(result):
    out, args = result
    work = next((out / "work").iterdir())
    before = (work / "1x0.5-at-3" / "point.json").stat().st_mtime_ns
    assert _script().main(args) == 0
    assert (work / "1x0.5-at-3" / "point.json").stat().st_mtime_ns == before
    assert len(list(out.glob("*-lm-frontier.json"))) >= 1


@pytest.mark.parametrize("point", ["24x1.5@60", "24@60", "x0@1"])
def test_a_bad_point_is_a_one_line_error(tiny_run, tmp_path, caplog, point):
    assert _script().main([str(tiny_run), "--points", point, "--out", str(tmp_path)]) == 1
    assert f"point {point!r}: expected LAYERSxFFN_RATIO@STEPS" in caplog.text
    assert not list(tmp_path.glob("*.json"))
