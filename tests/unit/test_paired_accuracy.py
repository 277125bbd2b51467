"""Paired accuracy differences: bootstrap interval, discordant counts, McNemar's exact p, and where they show."""

import copy
import json
from fractions import Fraction
from math import comb
from pathlib import Path

import numpy as np
import pytest

from edgekd.bench.config import BenchConfig
from edgekd.bench.core import Target, _add_accuracy_pairs, _add_speedups, run_benchmark
from edgekd.bench.inputs import from_texts
from edgekd.bench.stats import mcnemar_exact_p, paired_accuracy_difference
from edgekd.errors import ConfigError, DataError
from edgekd.report.core import build_report
from edgekd.report.markdown import render_markdown
from tests.conftest import load_benchmark_script, make_texts, make_tiny_model_dir

SETTING = "real_b1_t1"


def _pair(n: int, both: int, a_only: int, b_only: int) -> tuple[np.ndarray, np.ndarray]:
    """Correctness vectors over n examples: ``both`` right for both, then a-only, then b-only, rest wrong for both."""
    a, b = np.zeros(n, dtype=bool), np.zeros(n, dtype=bool)
    a[:both] = b[:both] = True
    a[both:both + a_only] = True
    b[both + a_only:both + a_only + b_only] = True
    return a, b


def test_identical_models_differ_by_exactly_nothing():
    a = np.array([1, 0, 1, 1, 0, 1] * 50, dtype=bool)
    out = paired_accuracy_difference(a, a.copy())
    assert out["delta_pt"] == 0.0 and out["interval_pt"] == [0.0, 0.0] and out["mcnemar_p"] == 1.0
    assert out["discordant"] == {"a_right_b_wrong": 0, "a_wrong_b_right": 0} and out["n"] == 300


def test_mcnemar_p_is_the_two_sided_binomial_tail_of_the_discordant_texts():
    # 3 vs 9 discordant: 2 * P(Bin(12, 1/2) <= 3) = 2 * (1 + 12 + 66 + 220) / 4096
    a, b = _pair(100, 70, 3, 9)
    out = paired_accuracy_difference(a, b)
    assert out["discordant"] == {"a_right_b_wrong": 3, "a_wrong_b_right": 9}
    assert out["mcnemar_p"] == pytest.approx(2 * 299 / 4096, rel=1e-3) and out["delta_pt"] == -6.0
    assert mcnemar_exact_p(9, 3) == mcnemar_exact_p(3, 9)  # two-sided: symmetric in the two models
    assert mcnemar_exact_p(5, 5) == 1.0 and mcnemar_exact_p(0, 0) == 1.0  # capped at 1
    # At test-split sizes (2^m far beyond a float) the exact tail still matches a rational computation.
    for x, y in ((60, 88), (900, 1010)):
        exact = Fraction(2 * sum(comb(x + y, i) for i in range(min(x, y) + 1)), 2 ** (x + y))
        assert mcnemar_exact_p(x, y) == pytest.approx(float(exact), rel=1e-12)
    assert mcnemar_exact_p(0, 2000) == pytest.approx(0.0, abs=1e-300) and mcnemar_exact_p(0, 2000) >= 0.0


def test_interval_matches_the_paired_normal_approximation_and_is_seeded():
    # 1,913 texts, 60 only a gets right, 88 only b: -1.46 points, as in the committed headline.
    a, b = _pair(1913, 1560, 60, 88)
    out = paired_accuracy_difference(a, b)
    low, high = out["interval_pt"]
    assert out["delta_pt"] == -1.46 and low < -1.46 < high
    # Paired: the spread comes from the 148 discordant texts only, se^2 = (p10 + p01 - d^2) / n.
    n, d = 1913, (60 - 88) / 1913
    se = 100 * np.sqrt(((60 + 88) / n - d**2) / n)
    assert low == pytest.approx(100 * d - 1.96 * se, abs=0.15) and high == pytest.approx(100 * d + 1.96 * se, abs=0.15)
    assert paired_accuracy_difference(a, b) == out  # same seed, same interval
    assert paired_accuracy_difference(a, b, seed=1)["interval_pt"] != out["interval_pt"]
    half = paired_accuracy_difference(a, b, confidence=0.5)["interval_pt"]
    assert low < half[0] < half[1] < high


def test_interval_widens_with_fewer_texts_at_the_same_rates():
    big, small = paired_accuracy_difference(*_pair(2000, 1500, 80, 120)), \
        paired_accuracy_difference(*_pair(200, 150, 8, 12))
    assert big["delta_pt"] == small["delta_pt"] == -2.0
    width = {k: v["interval_pt"][1] - v["interval_pt"][0] for k, v in (("big", big), ("small", small))}
    assert width["small"] > 2.5 * width["big"]  # ~sqrt(10) wider
    assert small["interval_pt"][0] <= -2.0 <= small["interval_pt"][1] and small["mcnemar_p"] > big["mcnemar_p"]


def test_bad_inputs_name_what_is_allowed():
    with pytest.raises(DataError, match=r"equally long.*\(3,\) and \(4,\)"):
        paired_accuracy_difference([1, 0, 1], [1, 0, 1, 1])
    with pytest.raises(DataError, match="bool or 0/1"):
        paired_accuracy_difference([1, 2], [1, 0])
    with pytest.raises(ConfigError, match=r"confidence must be in \(0, 1\)"):
        paired_accuracy_difference([1, 0], [1, 0], confidence=95)


# --- the report headline and the frontier ----------------------------------------------------------------------

TEACHER, STUDENT = "teacher onnxruntime cpu", "student.int8-dynamic onnxruntime cpu"
PEER = "peer.int8-dynamic onnxruntime cpu"


def _bench(with_pairs: bool) -> dict:
    """Three scored rows over 1,913 texts: student 60 vs 88 discordant texts against the teacher."""
    truth = np.ones(1913, dtype=bool)
    student, teacher = _pair(1913, 1560, 60, 88)
    peer = teacher.copy()
    peer[:10] = False
    correct = {STUDENT: student, TEACHER: teacher, PEER: peer}
    rows = []
    measured = [(TEACHER, "teacher", "fp32", 10.0, 90), (STUDENT, "student", "int8-dynamic", 2.0, 8),
                (PEER, "peer", "int8-dynamic", 5.0, 23)]  # name, role, precision, p50 ms, file MB
    for name, role, precision, p50, mb in measured:
        acc = float(np.mean(correct[name] == truth))
        rows.append({**Target(name, Path("m.onnx"), "onnxruntime", 0, role, role, precision=precision).describe(),
                     "file_bytes": mb * 10**6, "accuracy": acc, "macro_f1": acc, "min_recall": acc,
                     "min_recall_class": "x", "latency_ms": {SETTING: {"p50": p50, "p90": p50}},
                     "rounds_p50_ms": {SETTING: [p50] * 5}, "cv": {SETTING: 0.0}, "peak_rss_mb": 100.0,
                     "throughput_eps": {"real_b32_t1": 1.0}, "load_s": 0.1, "first_inference_ms": p50})
    for ref in (TEACHER, PEER):
        _add_speedups(rows, ref)
        if with_pairs:
            _add_accuracy_pairs(rows, ref, correct)
    return {"rows": rows, "references": [TEACHER, PEER], "threads": {"t1": 1}, "versions": {"edgekd": "test"},
            "machine": {"cpu": "cpu", "logical_cores": 2, "physical_cores": 2, "cpu_flags": []},
            "config": {"rounds": 5, "warmup": 1}, "inputs": {"sample": 10, "describe": "1,913 texts"},
            "load": {"disturbed": False, "other_processes_cores_mean": 0.0, "limit_cores": 0.2, "cores": 2,
                     "load1_mean": 0.1, "load1_max": 0.2}}


def test_report_headline_prints_the_interval_and_old_results_still_render():
    report = build_report(_bench(with_pairs=True), [], {"name": "t"}, SETTING)
    student = next(r for r in report["rows"] if r["name"] == STUDENT)
    assert set(student["accuracy_vs"]) == {TEACHER, PEER}
    teacher = next(r for r in report["rows"] if r["name"] == TEACHER)
    assert set(teacher["accuracy_vs"]) == {PEER}  # a reference is never paired with itself
    lines = render_markdown(report).splitlines()
    acc = next(line for line in lines if line.startswith("- accuracy"))
    low, high = student["accuracy_vs"][TEACHER]["interval_pt"]
    assert (f"**-1.46 points**, batch 1 as deployed [95% paired bootstrap {low:+.2f} to {high:+.2f} points; "
            "60 texts right only for the student vs 88 only for the teacher, McNemar p=0.026]") in acc
    peer = next(line for line in lines if "than the peer path" in line)
    assert "paired bootstrap" in peer and "only for the peer" in peer

    old = build_report(_bench(with_pairs=False), [], {"name": "t"}, SETTING)
    acc = next(line for line in render_markdown(old).splitlines() if line.startswith("- accuracy"))
    assert "**-1.46 points**, batch 1 as deployed)" in acc and "bootstrap" not in acc


def test_frontier_adds_the_interval_where_the_result_has_it(tmp_path):
    frontier = load_benchmark_script("frontier")
    for name, with_pairs in (("new", True), ("old", False)):
        report = build_report(_bench(with_pairs), [], {"name": "t"}, SETTING)
        (tmp_path / f"{name}.json").write_text(json.dumps({"headline": report["headline"], "report": report}))
    lines = frontier.render(tmp_path).splitlines()
    new = next(line for line in lines if line.startswith("| [new]") and STUDENT in line)
    old = next(line for line in lines if line.startswith("| [old]") and STUDENT in line)
    assert "(-1.46 [-2" in new and "], p=0.026)" in new and "(-1.46) |" in old
    assert any(line.startswith("Accuracy [low, high]: 95% paired bootstrap") for line in lines)
    (tmp_path / "new.json").unlink()
    assert "paired bootstrap" not in frontier.render(tmp_path)


def test_a_real_bench_pairs_every_scored_row_on_the_same_texts(tmp_path):
    """Two tiny random classifiers in their worker processes: the stored comparison is the one their
    per-text predictions give."""
    teacher_dir = make_tiny_model_dir(tmp_path / "teacher", seed=0, initializer_range=0.5)
    student_dir = make_tiny_model_dir(tmp_path / "student", seed=1, initializer_range=0.5)
    texts = make_texts(60, seed=3)
    labels = [int(label == "fresh") for _, label in texts]
    inputs = from_texts(teacher_dir / "tokenizer.json", [t for t, _ in texts], labels, 32, 16, 4, 0, tmp_path,
                        describe="60 texts")
    cfg = BenchConfig(rounds=1, sample=4, warmup=1, turn_warmup=1, fixed_runs=1, throughput_batch=4,
                      throughput_batches=1, threads=[1], bundle=False, cuda="off")
    targets = [Target("teacher pytorch cpu", teacher_dir, "pytorch", 0, "teacher", "teacher", "pytorch"),
               Target("student pytorch cpu", student_dir, "pytorch", 0, "student", "student", "pytorch")]
    bench = run_benchmark(targets, inputs, cfg, ["rotten", "fresh"], ["teacher pytorch cpu"])
    rows = {r["name"]: r for r in bench["rows"]}
    truth = np.asarray(labels)
    right = {k: np.asarray(r["predictions"]) == truth for k, r in rows.items()}
    pair = rows["student pytorch cpu"]["accuracy_vs"]["teacher pytorch cpu"]
    assert pair == paired_accuracy_difference(right["student pytorch cpu"], right["teacher pytorch cpu"])
    assert pair["n"] == 60 and pair["delta_pt"] == pytest.approx(
        100 * (rows["student pytorch cpu"]["accuracy"] - rows["teacher pytorch cpu"]["accuracy"]), abs=0.01)
    assert sum(pair["discordant"].values()) > 0  # two different random models: the test pairs something real
    assert "accuracy_vs" not in rows["teacher pytorch cpu"]
    json.dumps(copy.deepcopy(bench))  # bench.json stays plain JSON


def test_frontier_names_4_bit_embeddings_only_on_the_model_quantized_that_way():
    frontier = load_benchmark_script("frontier")
    report = {"stages": [{"kind": "quantize", "metrics": {"student.int8-dynamic": {"embedding_bits": 4},
                                                          "student.int8-static": {}}}]}
    assert frontier._how(report, "int8-dynamic") == "4-bit word embeddings"
    assert frontier._how(report, "int8-static") == "" and frontier._how(report) == ""
