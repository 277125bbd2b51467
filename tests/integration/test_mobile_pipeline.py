"""The mobile stage in a tiny pipeline: .ort files (4-bit embeddings included), and .tflite / .pte files where LiteRT
and ExecuTorch are installed (else the targets are skipped, naming the extra), flow into the bundle, which
deploy/edgekd_runtime.py runs with each runtime, and into the bench; `edgekd bench` times a .ort file on its own."""

import importlib.util
import json
import subprocess
import sys

import numpy as np

from edgekd.bench.core import DEPLOY_RUNTIME
from edgekd.config import load_pipeline
from edgekd.pipeline import run_pipeline
from tests.integration.conftest import write_pipeline
from tests.integration.test_cli import edgekd

STAGES = [
    {"kind": "teacher", "epochs": 1, "batch_size": 16, "learning_rate": 0.002},
    {"kind": "export", "models": ["teacher"]},
    {"kind": "quantize", "models": ["teacher"], "modes": ["dynamic"], "embedding_bits": 4},
    {"kind": "mobile", "models": ["teacher.onnx", "teacher.int8-dynamic.onnx"], "min_agreement_int8": 0.9,
     "targets": ["ort", "executorch", "litert"]},
    {"kind": "bundle", "model": "teacher.int8-dynamic.onnx"},
    {"kind": "bench", "rounds": 1, "sample": 10, "warmup": 1, "turn_warmup": 1, "fixed_runs": 1, "threads": [1],
     "throughput_batches": 1, "throughput_batch": 4, "cuda": "off"},
]


def test_ort_files_are_bundled_and_benched(tmp_path, tiny_model_dir, tiny_csv):
    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", stages=STAGES)
    result = run_pipeline(load_pipeline(path))
    mobile = json.loads((result.stages[3].folder / "manifest.json").read_text())["metrics"]
    installed = {t: importlib.util.find_spec(module) is not None
                 for t, module in (("executorch", "executorch"), ("litert", "litert_torch"))}
    expected = {"teacher.ort": "passed", "teacher.int8-dynamic.ort": "passed"}
    for target, suffix in (("executorch", "pte"), ("litert", "tflite")):
        if installed[target]:
            expected |= {f"teacher.{suffix}": "passed", f"teacher.int8.{suffix}": "passed"}
        else:  # skipped, naming the extra; the others go on
            expected[target] = f'skipped: the {target} target needs'
    gates = {k: v["gate"] for k, v in mobile.items()}
    assert gates.keys() == expected.keys() and all(gates[k].startswith(v) for k, v in expected.items()), gates
    for target in (t for t, ok in installed.items() if not ok):
        assert f'pip install "edgekd[{target}]"' in gates[target]
    int4 = result.artifacts["teacher.int8-dynamic.ort"]
    assert int4.type == "ort" and int4.source == "teacher.int8-dynamic.onnx" and int4.precision == "int8-dynamic"
    assert "GatherBlockQuantized" in (int4.path.parent / int4.meta["required_operators"]).read_text()

    bundle = result.artifacts["bundle"].path
    manifest = json.loads((bundle / "bundle.json").read_text())
    assert manifest["model"] == "model.onnx" and manifest["ort"]["model"] == "model.ort"
    assert (bundle / "model.ort").read_bytes() == int4.path.read_bytes()
    assert (bundle / manifest["ort"]["required_operators"]).is_file()
    spec = importlib.util.spec_from_file_location("edgekd_runtime_mobile_test", DEPLOY_RUNTIME)
    runtime = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(runtime)
    texts = ["a warm, witty film", "a tired mess of a movie", "great", "not good, and far too long to sit through"]
    onnx = runtime.Bundle(bundle, threads=1).logits(texts)  # model.onnx by default
    np.testing.assert_allclose(runtime.Bundle(bundle, threads=1, runtime="ort").logits(texts), onnx, atol=1e-5)
    carried = {"litert": ("model.tflite", "teacher.int8.tflite"), "executorch": ("model.pte", "teacher.int8.pte")}
    for target, (file, source) in carried.items():
        if not installed[target]:
            assert target not in manifest and not (bundle / file).exists()
            continue
        assert manifest[target]["model"] == file and manifest[target]["source_artifact"] == source
        assert (bundle / file).read_bytes() == result.artifacts[source].path.read_bytes()
        other = runtime.Bundle(bundle, threads=1, runtime=target).logits(texts)
        # the same int8 teacher through another quantizer: same shape and close scores
        assert other.shape == onnx.shape and np.abs(other - onnx).max() < 0.5
    if installed["litert"]:  # LiteRT's bundle runs with neither torch nor onnxruntime importable
        code = ("import sys; sys.modules.update(torch=None, onnxruntime=None, transformers=None); "
                f"sys.path.insert(0, {str(DEPLOY_RUNTIME.parent)!r}); from edgekd_runtime import Bundle; "
                f"print(Bundle({str(bundle)!r}, runtime='litert').predict(['a warm, witty film'])[0])")
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
        assert done.returncode == 0 and done.stdout.strip() in manifest_labels(bundle), done.stderr[-2000:]

    rows = {r["name"]: r for r in json.loads((result.stages[-1].folder / "bench.json").read_text())["rows"]}
    ort_rows = {n: r for n, r in rows.items() if r["format"] == "ort"}
    assert set(ort_rows) == {"teacher.ort onnxruntime cpu", "teacher.int8-dynamic.ort onnxruntime cpu"}
    onnx_row = rows["teacher.int8-dynamic onnxruntime cpu"]
    for row in ort_rows.values():
        assert row["inputs"] == onnx_row["inputs"] and row["latency_ms"]["real_b1_t1"]["runs"] == 10
    assert ort_rows["teacher.ort onnxruntime cpu"]["accuracy"] == rows["teacher onnxruntime cpu"]["accuracy"]
    assert rows["bundle end-to-end (tokenizer + onnxruntime)"]["file_bytes"] < sum(
        p.stat().st_size for p in bundle.iterdir())  # the bundle row does not count the mobile copy

    out = tmp_path / "r.json"
    proc = edgekd("bench", int4.path, "--rounds", "1", "--samples", "6", "--threads", "1", "--warmup", "1",
                  "--out", out)
    assert proc.returncode == 0, proc.stderr[-2000:]
    row = json.loads(out.read_text())["rows"][0]
    assert row["format"] == "ort" and row["runtime"] == "onnxruntime" and row["file_bytes"] == int4.path.stat().st_size


def manifest_labels(bundle) -> list[str]:
    return json.loads((bundle / "labels.json").read_text())
