"""The real CLI, end to end on a tiny pipeline, plus the one-line errors a user gets for bad input."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from tests.integration.conftest import TINY_STAGES, write_pipeline

ROOT = Path(__file__).parents[2]


def edgekd(*args, cwd=None, timeout=900):
    env = {**os.environ, "PYTHONPATH": str(ROOT)}
    return subprocess.run([sys.executable, "-m", "edgekd", *map(str, args)], capture_output=True, text=True, cwd=cwd,
                          env=env, timeout=timeout)


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory, tiny_model_dir, tiny_csv):
    tmp = tmp_path_factory.mktemp("cli")
    path = write_pipeline(tmp / "tiny.yaml", tiny_model_dir, tiny_csv, tmp / "runs")
    proc = edgekd("run", path)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return path, tmp / "runs" / "tiny", proc


def test_run_writes_every_artifact(finished_run):
    _, run_dir, proc = finished_run
    run = json.loads((run_dir / "run.json").read_text())
    kinds = [s["kind"] for s in run["stages"]]
    assert kinds == [s["kind"] for s in TINY_STAGES] and all(s["status"] == "ran" for s in run["stages"])
    art = {k: run_dir / v for k, v in run["artifacts"].items()}
    for name in ("teacher", "pruned", "student"):
        assert (art[name] / "model.safetensors").is_file() and (art[name] / "tokenizer.json").is_file()
    for name in ("teacher.onnx", "student.onnx", "student.int8-dynamic.onnx", "student.int8-static.onnx"):
        assert art[name].is_file()
    for name in ("report.json", "report.md", "report.png"):
        assert (run_dir / name).is_file() and (run_dir / name).stat().st_size > 0
    assert {"model.onnx", "tokenizer.json", "labels.json", "bundle.json"} <= {p.name for p in art["bundle"].iterdir()}
    assert "report:" in proc.stdout


def test_report_schema_and_rows(finished_run):
    _, run_dir, _ = finished_run
    report = json.loads((run_dir / "report.json").read_text())
    assert report["schema"] == "edgekd.report/v2"
    names = {r["name"] for r in report["rows"]}
    assert {"teacher pytorch cpu", "teacher onnxruntime cpu", "student.int8-dynamic onnxruntime cpu",
            "student.int8-static onnxruntime cpu", "bundle end-to-end (tokenizer + onnxruntime)"} <= names
    sample, rounds = report["bench"]["inputs"]["sample"], report["bench"]["config"]["rounds"]
    assert sample == 20 and report["bench"]["threads"]["t1"] == 1
    for row in report["rows"]:
        # every model timed on the same sample, once per round, at each thread setting
        for tag in report["bench"]["threads"]:
            assert row["latency_ms"][f"real_b1_{tag}"]["runs"] == sample * rounds
            assert len(row["rounds_p50_ms"][f"real_b1_{tag}"]) == rounds
        assert sum(b["inputs"] for b in row["by_length"]["real_b1_t1"].values()) == sample
        assert set(row["speedup_vs"]) == {"teacher onnxruntime cpu", "teacher pytorch cpu"}
        assert sum(map(sum, row["confusion"])) == report["data"]["sizes"]["test"]  # every test row scored
    teacher = next(r for r in report["rows"] if r["name"] == "teacher onnxruntime cpu")
    assert teacher["accuracy"] > 0.8  # the tiny teacher does learn the synthetic task
    assert teacher["speedup_vs"]["teacher onnxruntime cpu"]["real_b1_t1"]["median"] == 1.0
    h = report["headline"]
    assert h["student"] == "student.int8-dynamic onnxruntime cpu"  # the bundled one, not the best on test
    assert h["teacher_onnxruntime"] == "teacher onnxruntime cpu" and h["size_ratio"] > 2
    md = (run_dir / "report.md").read_text()
    assert "than the teacher on ONNX Runtime fp32" in md and "worst recall" in md
    assert "| teacher pytorch cpu |" in md and "Latency by input length" in md


def test_bundle_runtime_matches_int8_model_without_torch(finished_run):
    _, run_dir, _ = finished_run
    run = json.loads((run_dir / "run.json").read_text())
    bundle = run_dir / run["artifacts"]["bundle"]
    bench_dir = (run_dir / run["artifacts"]["bench.json"]).parent
    report = json.loads((run_dir / "report.json").read_text())
    index = [r["name"] for r in report["rows"]].index("student.int8-dynamic onnxruntime cpu") + 1
    expected = json.loads((bench_dir / "predictions" / f"{index:02d}.json").read_text())["predictions"]
    test_split = next(run_dir.glob("00-data-*/test.jsonl"))
    labels = json.loads(next(run_dir.glob("00-data-*/labels.json")).read_text())
    code = (
        "import json, sys\n"
        f"sys.path.insert(0, {str(ROOT / 'deploy')!r})\n"
        "from edgekd_runtime import Bundle\n"
        f"texts = [json.loads(l)['text'] for l in open({str(test_split)!r}) if l.strip()]\n"
        f"print(json.dumps({{'pred': Bundle({str(bundle)!r}).predict(texts),"
        " 'torch': 'torch' in sys.modules, 'transformers': 'transformers' in sys.modules}))\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    out = json.loads(proc.stdout)
    assert out["torch"] is False and out["transformers"] is False
    assert out["pred"] == [labels[i] for i in expected]


def test_rerun_skips_everything_and_rerun_bench_measures_again(finished_run):
    path, run_dir, _ = finished_run
    bench_before = json.loads(next(run_dir.glob("07-bench-*/bench.json")).read_text())
    proc = edgekd("run", path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert all(s["status"] == "skipped" for s in run["stages"])
    proc = edgekd("run", path, "--rerun", "bench")
    assert proc.returncode == 0, proc.stderr[-2000:]
    run = json.loads((run_dir / "run.json").read_text())
    assert [s["status"] for s in run["stages"]][-2:] == ["ran", "ran"]  # bench and the report after it
    assert all(s["status"] == "skipped" for s in run["stages"][:-2])
    bench_after = json.loads(next(run_dir.glob("07-bench-*/bench.json")).read_text())
    # really measured again: fresh timings, and the same predictions from the same models
    assert bench_after["rows"][0]["rounds_p50_ms"] != bench_before["rows"][0]["rounds_p50_ms"]
    assert [r["accuracy"] for r in bench_after["rows"]] == [r["accuracy"] for r in bench_before["rows"]]


def test_report_command_rebuilds(finished_run):
    _, run_dir, _ = finished_run
    (run_dir / "report.md").unlink()
    proc = edgekd("report", run_dir)
    assert proc.returncode == 0 and "# edgekd report: tiny" in proc.stdout and (run_dir / "report.md").is_file()


def test_report_on_a_damaged_run_dir_gives_one_line_errors(finished_run, tmp_path):
    import shutil

    _, run_dir, _ = finished_run
    copy = tmp_path / "copy"
    shutil.copytree(run_dir, copy)
    bench = next(copy.glob("07-bench-*/bench.json"))
    bench.write_text("{ truncated")
    _one_line_error(edgekd("report", copy), "bench.json", "corrupt")
    bench.unlink()
    _one_line_error(edgekd("report", copy), "bench.json", "missing")
    manifest = next(copy.glob("02-prune-*/manifest.json"))
    manifest.unlink()
    _one_line_error(edgekd("report", copy), "02-prune-", "manifest.json is missing")
    (copy / "run.json").write_text("[]")
    _one_line_error(edgekd("report", copy))


def _one_line_error(proc, *needles):
    assert proc.returncode == 2
    assert "Traceback" not in proc.stderr
    lines = [line for line in proc.stderr.strip().splitlines() if line.startswith("edgekd: error:")]
    assert len(lines) == 1, proc.stderr
    for needle in needles:
        assert needle in lines[0], lines[0]


def test_bad_inputs_give_one_line_errors(tmp_path, tiny_model_dir, tiny_csv):
    good = dict(model_dir=tiny_model_dir, data_path=tiny_csv, out_dir=tmp_path / "runs")
    cases = [
        (write_pipeline(tmp_path / "typo.yaml", **good, stages=[{"kind": "teacher", "epochz": 1}]),
         ["epochz", "unknown key", "epochs"]),
        (write_pipeline(tmp_path / "ratio.yaml", **good, stages=[{"kind": "teacher"}, {"kind": "prune", "ffn_ratio": 1.2}]),
         ["ffn_ratio", "1.2"]),
        (write_pipeline(tmp_path / "order.yaml", **good, stages=[{"kind": "teacher"}, {"kind": "quantize"}]),
         ["quantize", "student.onnx"]),
        (write_pipeline(tmp_path / "model.yaml", tmp_path / "no-such-model", tiny_csv, tmp_path / "runs",
                        stages=[{"kind": "teacher", "epochs": 1}]), ["no-such-model", "not found"]),
    ]
    bad_cols = tmp_path / "cols.csv"
    bad_cols.write_text("sentence,label\nhello,1\nbye,0\n")
    cases.append((write_pipeline(tmp_path / "cols.yaml", tiny_model_dir, bad_cols, tmp_path / "runs",
                                 stages=[{"kind": "teacher", "epochs": 1}]), ["cols.csv", "'text'", "sentence"]))
    few = tmp_path / "few.csv"
    few.write_text("text,label\nfine film,pos\nawful film,neg\n")
    cases.append((write_pipeline(tmp_path / "few.yaml", tiny_model_dir, few, tmp_path / "runs",
                                 stages=[{"kind": "teacher", "epochs": 1}]), ["split is empty"]))
    for path, needles in cases:
        _one_line_error(edgekd("run", path), *needles)
    proc = edgekd("--debug", "run", tmp_path / "typo.yaml")
    assert proc.returncode != 0 and "Traceback" in proc.stderr


def test_validate_and_help():
    proc = edgekd("validate", ROOT / "pipelines" / "minilm-rotten-tomatoes.yaml", "stages.teacher.epochs=1")
    assert proc.returncode == 0 and "epochs: 1" in proc.stdout and "valid" in proc.stderr
    for cmd in ([], ["run"], ["validate"], ["report"]):
        proc = edgekd(*cmd, "--help")
        assert proc.returncode == 0 and "usage: edgekd" in proc.stdout
