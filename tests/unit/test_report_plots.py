"""The report's runtime plots: the Pareto front, and which PNGs write_report writes and report.md shows."""

import copy

import pytest

from edgekd.report.core import write_report
from edgekd.report.plot_runtimes import latency_rows, pareto_front, runtime_colours, short_name, size_rows

SETTING = "real_b1_t1"
PNG = b"\x89PNG\r\n\x1a\n"


def _row(name: str, runtime: str, p50: float | None, accuracy: float | None, *, role: str = "student",
         fmt: str = "onnx", precision: str = "fp32", mb: float = 10.0, rss: float | None = 150.0) -> dict:
    """One benchmark row as the bench writes it; p50 None: an accuracy-only (timed false) row."""
    row = {"name": name, "model": name.split()[0], "role": role, "format": fmt, "precision": precision,
           "runtime": runtime, "device": "cpu", "file_bytes": int(mb * 1e6), "timed": p50 is not None,
           "latency_ms": {}, "rounds_p50_ms": {}, "throughput_eps": {}, "cv": {}}
    if accuracy is not None:
        row.update(accuracy=accuracy, macro_f1=accuracy)
    if rss is not None:
        row["peak_rss_mb"] = rss
    if p50 is not None:
        row["latency_ms"][SETTING] = {"p50": p50, "p90": 1.4 * p50, "p99": 2 * p50, "mean": p50, "stdev": 0.1,
                                      "min": 0.4 * p50, "runs": 40}
        row.update(cv={SETTING: 0.1}, load_s=0.2, first_inference_ms=3.0, throughput_eps={"real_b32_t1": 100.0})
    return row


def _report(rows: list[dict]) -> dict:
    """The report fields render_markdown reads, around ``rows``."""
    return {"schema": "edgekd.report/v2", "generated": "2026-01-01T00:00:00+00:00",
            "run": {"name": "tiny", "seed": 0, "pipeline": {"name": "tiny"}}, "data": {"label_names": ["neg", "pos"]},
            "stages": [], "versions": {"onnxruntime": "1.31.1"}, "headline": None, "rows": rows,
            "machine": {"cpu": "test cpu", "logical_cores": 2, "physical_cores": 2, "cpu_flags": []},
            "bench": {"config": {"rounds": 2, "warmup": 1}, "threads": {"t1": 1}, "latency_setting": SETTING,
                      "inputs": {"describe": "20 texts", "sample": 20}, "references": [],
                      "load": {"disturbed": False, "other_processes_cores_mean": 0.1, "limit_cores": 0.5, "cores": 2,
                               "load1_mean": 0.5, "load1_max": 0.9}}}


def _runtime_rows() -> list[dict]:
    return [_row("teacher onnxruntime cpu", "onnxruntime", 5.0, 0.85, role="teacher", mb=91, rss=300),
            _row("student.int8-dynamic onnxruntime cpu", "onnxruntime", 0.6, 0.83, precision="int8-dynamic", mb=8.5),
            _row("student.pte executorch cpu", "executorch", 1.2, 0.84, fmt="pte", mb=45),
            _row("student.int8.tflite litert cpu", "litert", 0.8, 0.82, fmt="tflite", precision="int8", mb=11),
            _row("peer.int8-dynamic onnxruntime cpu", "onnxruntime", 2.8, 0.84, role="peer", mb=23, rss=None),
            _row("student-hard-labels pytorch cpu", "pytorch", None, 0.83, role="ablation", mb=52)]


def test_pareto_front_keeps_exactly_the_non_dominated_rows():
    fast = _row("fast", "onnxruntime", 1.0, 0.80)
    better = _row("slower but more accurate", "litert", 2.0, 0.85)
    twin = _row("same point as 'better'", "executorch", 2.0, 0.85)
    worse = _row("slower and less accurate than 'better'", "executorch", 3.0, 0.82)
    tie_slower = _row("as accurate as 'fast', slower", "pytorch", 1.5, 0.80)
    best = _row("slowest, most accurate", "pytorch", 4.0, 0.90)
    untimed = _row("untimed", "pytorch", None, 0.99)  # would dominate everything if it took part
    unscored = _row("unscored", "onnxruntime", 0.1, None)
    other_setting = _row("timed on another setting", "onnxruntime", 0.1, 0.99)
    other_setting["latency_ms"] = {"real_b1_tall": other_setting["latency_ms"].pop(SETTING)}
    rows = [best, worse, tie_slower, twin, untimed, unscored, other_setting, better, fast]
    front = pareto_front(rows, SETTING)
    assert [r["name"] for r in front[:1]] == ["fast"] and front[-1] is best
    assert {r["name"] for r in front} == {"fast", "slower but more accurate", "same point as 'better'",
                                          "slowest, most accurate"}
    assert [r["latency_ms"][SETTING]["p50"] for r in front] == [1.0, 2.0, 2.0, 4.0]  # sorted by p50
    assert pareto_front([untimed, unscored], SETTING) == []


def test_short_names_and_runtime_colours():
    rows = _runtime_rows()
    assert [short_name(r) for r in rows[:4]] == ["teacher ORT", "student.int8-dynamic ORT", "student.pte ExecuTorch",
                                                 "student.int8.tflite LiteRT"]
    bundle = _row("bundle end-to-end (tokenizer + onnxruntime)", "bundle", 0.7, 0.83, fmt="bundle")
    gpu = _row("teacher pytorch cuda", "pytorch", 1.0, 0.85)
    gpu["device"] = "cuda"
    assert short_name(bundle) == "bundle end-to-end" and short_name(gpu) == "teacher PyTorch cuda"
    colours = runtime_colours(rows + [_row("x coreml cpu", "coreml", 1, 0.5), _row("y qnn cpu", "qnn", 1, 0.5)])
    assert len(set(colours.values())) == len(colours) == 6  # every runtime, known or not, its own colour


def test_write_report_writes_the_runtime_plots_and_the_markdown_shows_them(tmp_path):
    report = _report(_runtime_rows())
    # The plots' rows: timed ones, fastest first; the size plot also needs a peak RSS (the peer row has none).
    assert [r["runtime"] for r in latency_rows(report)] == ["onnxruntime", "litert", "executorch", "onnxruntime",
                                                            "onnxruntime"]
    assert [r["name"] for r in size_rows(report)] == [r["name"] for r in latency_rows(report) if r["role"] != "peer"]
    report["rows"][3].update(delegate="XNNPACK", throughput_batching="one text at a time")
    assert set(write_report(report, tmp_path)) == {"report.json", "report.md", "report.png", "report_latency.png",
                                                   "report_size.png"}  # the stage's outputs
    for name in ("report.png", "report_latency.png", "report_size.png"):
        data = (tmp_path / name).read_bytes()
        assert data[:8] == PNG and len(data) > 10_000, name
    assert not list(tmp_path.glob(".*tmp*"))  # the atomic writes left no temporary file
    md = (tmp_path / "report.md").read_text()
    runtimes = md.split("## Runtimes", 1)[1].split("\n## ", 1)[0]
    assert "](report.png)" in md and md.index("](report.png)") < md.index("## Runtimes")
    assert "![latency spread](report_latency.png)" in runtimes and "](report_size.png)" in runtimes
    assert f"`{SETTING}`" in runtimes
    assert "| student.int8.tflite litert cpu | litert cpu, XNNPACK | int8 |" in md  # the delegate beside the runtime
    assert "| student.pte executorch cpu | executorch cpu | fp32 |" in md  # (none recorded: nothing added)
    assert "real_b32_t1: 100 (one text at a time) |" in md  # a batch-1 file's throughput says how it was run


def test_a_report_without_timed_rows_gets_no_runtime_plots(tmp_path):
    rows = [_row("student-hard-labels pytorch cpu", "pytorch", None, 0.83, role="ablation"),
            _row("student-no-beta pytorch cpu", "pytorch", None, 0.81, role="ablation")]
    (tmp_path / "report_latency.png").write_bytes(PNG)  # left by an earlier report of this run: now stale
    assert set(write_report(_report(rows), tmp_path)) == {"report.json", "report.md"}
    assert not (tmp_path / "report_latency.png").exists() and not (tmp_path / "report_size.png").exists()
    md = (tmp_path / "report.md").read_text()
    assert "report_latency.png" not in md and "report_size.png" not in md and "## Runtimes" not in md


@pytest.mark.parametrize("drop", ["peak_rss_mb", "timing"])
def test_rows_missing_memory_or_timing_leave_only_their_plot(tmp_path, drop):
    rows = copy.deepcopy(_runtime_rows()[:3])
    for r in rows:
        if drop == "peak_rss_mb":
            del r["peak_rss_mb"]
        else:
            r["latency_ms"][SETTING].pop("p99")  # an incomplete timing: no whisker to draw
    write_report(_report(rows), tmp_path)
    md = (tmp_path / "report.md").read_text()
    assert (tmp_path / "report_size.png").exists() is False and "report_size.png" not in md
    if drop == "peak_rss_mb":
        assert (tmp_path / "report_latency.png").read_bytes()[:8] == PNG and "report_latency.png" in md
    else:
        assert not (tmp_path / "report_latency.png").exists() and "report_latency.png" not in md
