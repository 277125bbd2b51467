"""benchmarks/arm_check.py: a tiny int8 classifier (ONNX; LiteRT too where litert-torch is installed) on Arm kernels
under qemu-aarch64 against x86. Needs qemu-user-static and an arm64 root ($EDGEKD_ARM_ROOT, default /tmp/arm/root,
built by ``python benchmarks/arm_check.py --setup``); skipped without them."""

import importlib.util
import json
import math
import os
import shutil
import sys
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import load_benchmark_script, make_tiny_model_dir

ARM_ROOT = Path(os.environ.get("EDGEKD_ARM_ROOT", "/tmp/arm/root"))
N = 40  # texts; the emulated side runs 100-700x slower than native


def _skip_reason() -> str | None:
    if shutil.which("qemu-aarch64-static") is None:
        return "qemu-aarch64-static not installed (apt-get install qemu-user-static debootstrap)"
    if not (ARM_ROOT / "usr/bin/python3.11").exists():
        return f"no arm64 root at {ARM_ROOT} (set EDGEKD_ARM_ROOT or run benchmarks/arm_check.py --setup)"
    if os.geteuid() != 0:
        return "needs root (unshare -m and a bind mount of a fake Arm /proc/cpuinfo)"
    return None


@pytest.fixture(scope="module")
def int8_models(tmp_path_factory) -> tuple[list[Path], Path]:
    """A 2-layer, 64-wide random BERT as int8-dynamic ONNX (and int8 bucketed .tflite when LiteRT can convert),
    plus N random token rows of 3-30 ids."""
    import torch
    from transformers import AutoModelForSequenceClassification

    from edgekd.export.core import export_with_torch
    from edgekd.quantize.core import quantize_dynamic_int8

    folder = tmp_path_factory.mktemp("arm")
    hf = make_tiny_model_dir(folder / "hf", "bert", num_hidden_layers=2, initializer_range=0.2)
    model = AutoModelForSequenceClassification.from_pretrained(hf).eval()
    with torch.no_grad():
        export_with_torch(model, folder / "fp32.onnx", opset=17)
    quantize_dynamic_int8(folder / "fp32.onnx", folder / "int8.onnx", preset="arm64")
    models = [folder / "int8.onnx"]
    if importlib.util.find_spec("litert_torch") and importlib.util.find_spec("ai_edge_quantizer"):
        from edgekd.mobile.litert import export_tflite

        models.append(export_tflite(hf, folder / "tflite", "int8", max_length=32, buckets=(16, 32)).path)
    rng = np.random.default_rng(0)
    rows = [rng.integers(5, model.config.vocab_size, size=int(rng.integers(3, 31))) for _ in range(N)]
    ids = folder / "ids.npz"
    np.savez(ids, real_ids=np.concatenate(rows), real_offsets=np.cumsum([0] + [len(r) for r in rows]))
    return models, ids


SKIP = _skip_reason()


@pytest.mark.slow
@pytest.mark.skipif(SKIP is not None, reason=SKIP or "")
def test_int8_students_agree_on_arm_and_x86(int8_models, tmp_path):
    models, ids = int8_models
    out = tmp_path / "arm.json"
    argv = ["--root", str(ARM_ROOT), "--ids", str(ids), "--out", str(out), "--host-python", sys.executable]
    for path in models:
        argv += ["--model", str(path)]
    rc = load_benchmark_script("arm_check").main(argv)
    result = json.loads(out.read_text())
    assert rc == 0, result
    assert result["machine"]["host"] == "x86_64" and result["machine"]["arm"]["platform"] == "aarch64"
    assert result["machine"]["arm"]["versions"]["onnxruntime"] == "1.31.1"
    assert set(result["models"]) == {p.name for p in models}
    for name, row in result["models"].items():
        assert row["n"] == N, name
        assert row["arm_platform"] == "aarch64", name
        assert row["agreement"] >= 0.99, (name, row)
        assert math.isfinite(row["max_abs_logit_diff"]) and row["max_abs_logit_diff"] < 0.5, (name, row)
    # The logits behind the summary: both sides wrote [N, 2] per model, and they are not degenerate (rows differ).
    for side in ("arm", "x86"):
        logits = np.load(tmp_path / "arm.work" / side / "0.npz")["logits"]
        assert logits.shape == (N, 2) and np.ptp(logits[:, 0]) > 0


def test_missing_root_is_one_line(tmp_path, caplog):
    """No root (or no qemu): exit status 2 and one error line saying what to install or build; nothing written."""
    out = tmp_path / "r.json"
    rc = load_benchmark_script("arm_check").main(["--root", str(tmp_path / "nothing"), "--model", "x.onnx",
                                                  "--ids", "ids.npz", "--out", str(out)])
    errors = [r.getMessage() for r in caplog.records if r.levelname == "ERROR"]
    assert rc == 2 and len(errors) == 1 and "\n" not in errors[0] and not out.exists()
    assert "--setup" in errors[0] or "apt-get install qemu-user-static" in errors[0]
