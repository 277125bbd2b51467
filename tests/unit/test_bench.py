"""The benchmark's machinery: identical inputs for every model, paired statistics, load accounting."""

import subprocess
import sys
import time

import numpy as np
import psutil
import pytest

from edgekd.bench import worker as worker_module
from edgekd.bench.core import LoadSampler, _busy_cpu_seconds, _own_cpu_seconds
from edgekd.bench.inputs import _save, load_inputs
from edgekd.bench.stats import by_length, median_interval, paired_speedup
from edgekd.bench.worker import Worker, peak_rss_mb
from edgekd.metrics import quality_report


def test_inputs_are_views_of_one_array_and_the_sample_is_seeded(tmp_path):
    rows = [list(range(n)) for n in (3, 1, 7, 2, 5)]
    path, size = _save(tmp_path, rows, [0, 1, 1, 0, 1], [9] * 8, sample_size=3, seed=4)
    data = load_inputs(str(path))
    assert [r.tolist() for r in data["rows"]] == rows and size == 3
    assert len({id(r.base) for r in data["rows"]}) == 1  # one backing buffer (a copy per row inflated peak RSS)
    (tmp_path / "again").mkdir()
    again, _ = _save(tmp_path / "again", rows, None, [9] * 8, sample_size=3, seed=4)
    assert load_inputs(str(again))["sample"].tolist() == data["sample"].tolist()
    assert load_inputs(str(again))["labels"].tolist() == [-1] * 5


class _Recorder:
    """A stand-in model that remembers what it was asked; ``delay`` makes it slow or fast."""

    takes = "ids"
    delay = 0.0
    seen: list = []

    def __init__(self, target):
        self.seen = []

    def set_threads(self, n):
        pass

    def __call__(self, rows):
        self.seen.append([r.tolist() for r in rows])
        time.sleep(self.delay)
        return np.zeros((len(rows), 2))

    def sync(self):
        pass


class _SlowRecorder(_Recorder):
    delay = 0.003


def test_fast_and_slow_models_see_exactly_the_same_inputs_in_the_same_order(tmp_path, monkeypatch):
    rows = [[i] * (1 + i % 5) for i in range(40)]
    npz, _ = _save(tmp_path, rows, None, [1] * 8, sample_size=25, seed=0)
    monkeypatch.setitem(worker_module.RUNNERS, "fast", _Recorder)
    monkeypatch.setitem(worker_module.RUNNERS, "slow", _SlowRecorder)
    seen = {}
    for runtime in ("fast", "slow"):
        w = Worker({"target": {"runtime": runtime}, "inputs": str(npz), "texts": None, "throughput": [4, 2]})
        reply = w.handle({"op": "round", "fixed_runs": 3, "turn_warmup": 4})
        assert len(reply["real"]) == 25 and len(reply["fixed"]) == 3
        seen[runtime] = w.runner.seen
    assert seen["fast"] == seen["slow"]
    sample = load_inputs(str(npz))["sample"]
    assert seen["fast"][:4] == [[rows[i]] for i in sample[:4]]  # the untimed start of the turn
    assert seen["fast"][4:29] == [[rows[i]] for i in sample]  # then the seeded sample, batch 1, in its order


def test_median_interval_uses_order_statistics_with_their_true_coverage():
    five = median_interval([3.0, 1.0, 2.0, 5.0, 4.0])
    assert (five["median"], five["low"], five["high"]) == (3.0, 1.0, 5.0) and five["coverage"] == 0.9375
    ten = median_interval(list(range(1, 11)))
    # k=2: 1 - 2 * (1 + 10) / 1024 = 0.9785 >= 0.95, k=3 would give 0.891
    assert (ten["low"], ten["high"]) == (2.0, 9.0) and ten["coverage"] == pytest.approx(0.9785, abs=1e-4)


def test_paired_speedup_cancels_drift_that_hits_both_models():
    # The machine slows down 2x in rounds 2 and 4; the model is always 2x faster than the reference.
    ref, model = [10.0, 20.0, 10.0, 20.0, 10.0], [5.0, 10.0, 5.0, 10.0, 5.0]
    paired = paired_speedup(ref, model)
    assert paired["median"] == paired["low"] == paired["high"] == 2.0 and paired["rounds"] == [2.0] * 5


def test_latency_by_length_buckets_have_inclusive_upper_edges():
    lengths = np.array([5, 16, 17, 32, 33, 64, 65, 200])
    seconds = np.tile(np.arange(1, 9, dtype=float) / 1000, (2, 1))  # 2 rounds, ms = 1..8
    out = by_length(seconds, lengths, [16, 32, 64])
    assert list(out) == ["<=16", "17-32", "33-64", ">64"]
    assert [out[b]["inputs"] for b in out] == [2, 2, 2, 2]
    assert out["<=16"]["p50"] == 1.5 and out[">64"]["p50"] == 7.5


def test_quality_report_exposes_a_lost_rare_class():
    gold = np.array([0] * 90 + [1] * 10)
    pred = np.zeros(100, dtype=int)  # never predicts the rare class: 90% accuracy
    q = quality_report(pred, gold, ["common", "rare"])
    assert q["accuracy"] == 0.9 and q["min_recall"] == 0.0 and q["min_recall_class"] == "rare"
    assert q["confusion"] == [[90, 0], [10, 0]] and q["per_class"]["rare"]["f1"] == 0.0
    assert q["macro_f1"] == pytest.approx((2 * 90 / 190) / 2, abs=1e-6)


def test_peak_rss_reads_this_process_high_water_mark():
    # A fresh process: in the long-lived test process memory freed earlier leaves the high-water
    # mark above what is resident now, so 64 MB more need not raise it.
    code = ("import numpy as np\n"
            "from edgekd.bench.worker import peak_rss_mb\n"
            "before = peak_rss_mb()\n"
            "block = np.ones(64 * 2**20 // 8)  # 64 MB touched\n"
            "print(before, peak_rss_mb(), block.sum() > 0)\n")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    before, after, touched = out.split()
    assert float(after) >= float(before) + 50 and touched == "True"


BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass"
# A process that is not ours: started through a middle process that exits at once.
DETACHED = ("import subprocess, sys\n"
            f"p = subprocess.Popen([sys.executable, '-c', {BUSY!r}])\nprint(p.pid)")


def _wait_until_done(pid: int) -> None:
    while psutil.pid_exists(pid) and psutil.Process(pid).status() != psutil.STATUS_ZOMBIE:
        time.sleep(0.05)


def test_own_cpu_counts_live_workers_and_not_other_processes():
    # A live worker of ours (not yet reaped, like the bench's persistent workers) is our own CPU...
    before = _own_cpu_seconds()
    worker = subprocess.Popen([sys.executable, "-c", BUSY])
    _wait_until_done(worker.pid)
    assert _own_cpu_seconds() - before >= 1.4
    worker.wait()
    # ...while a process that is not our descendant is someone else's, even when we started it indirectly.
    before, busy_before = _own_cpu_seconds(), _busy_cpu_seconds()
    pid = int(subprocess.run([sys.executable, "-c", DETACHED], capture_output=True, text=True).stdout)
    _wait_until_done(pid)
    assert _own_cpu_seconds() - before < 0.5  # only the short-lived middle process
    assert _busy_cpu_seconds() - busy_before >= 1.4


def test_load_sampler_reports_other_processes_cpu():
    with LoadSampler(interval=0.2) as other:
        pid = int(subprocess.run([sys.executable, "-c", DETACHED], capture_output=True, text=True).stdout)
        _wait_until_done(pid)
    # 1.5 s of someone else's CPU over a window of about 1.6 s; a busy machine only raises it
    assert other.summary()["other_processes_cores_mean"] > 0.5


def test_a_gpu_host_adds_the_teachers_fp32_and_fp16_cuda_rows(tmp_path, tiny_bert_dir, monkeypatch):
    """Planned only where CUDA is present (faked here) and cuda is auto; the half-precision runner really casts."""
    import torch

    from edgekd.artifacts import Artifact
    from edgekd.bench.config import BenchConfig
    from edgekd.bench.stage import plan_targets

    arts = {"teacher": Artifact("teacher", "hf-model", tiny_bert_dir, role="teacher", pad_id=0)}
    assert [t.device for t in plan_targets(arts, BenchConfig())] == ["cpu"]  # no GPU here
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda i=0: "Test GPU")
    rows = {t.name: t for t in plan_targets(arts, BenchConfig())}
    assert {n: (t.device, t.precision) for n, t in rows.items()} == {
        "teacher pytorch cpu": ("cpu", "fp32"), "teacher pytorch cuda": ("cuda", "fp32"),
        "teacher.fp16 pytorch cuda": ("cuda", "fp16")}
    assert rows["teacher.fp16 pytorch cuda"].describe()["device_name"] == "Test GPU"
    assert [t.device for t in plan_targets(arts, BenchConfig(cuda="off"))] == ["cpu"]

    # The half-precision path of the runner, on the CPU with bfloat16 (what the GPU rows do with float16).
    job = {"path": str(tiny_bert_dir), "pad_id": 0, "device": "cpu"}
    ids = [np.array([1, 5, 9, 4, 2]), np.array([1, 7, 2])]
    fp32 = worker_module.TorchRunner({**job, "precision": "fp32"})
    half = worker_module.TorchRunner({**job, "precision": "bf16"})
    assert next(half.model.parameters()).dtype == torch.bfloat16
    assert not hasattr(fp32, "timed_call")  # on the CPU the host's clock times it; CUDA rows use CUDA events
    a, b = fp32(ids), half(ids)
    assert b.dtype == np.float32 and not np.array_equal(a, b) and np.abs(a - b).max() < 0.1


def test_a_runner_with_its_own_clock_is_timed_by_it():
    """How a CUDA row is timed (CUDA events): _timed asks the runner's timed_call for every timed input."""
    class Clocked:
        calls: list = []

        def __call__(self, x):
            self.calls.append(("warmup", x))

        def sync(self):
            pass

        def timed_call(self, x):
            self.calls.append(("timed", x))
            return 0.25

    runner = Clocked()
    assert worker_module._timed(runner, [1, 2, 3], warmup=2) == [0.25, 0.25, 0.25]
    assert runner.calls == [("warmup", 1), ("warmup", 2), ("timed", 1), ("timed", 2), ("timed", 3)]


def test_each_converted_file_reports_its_test_agreement_with_its_pytorch_model():
    from edgekd.bench.stage import add_agreement_with_pytorch

    def row(name, model, fmt, predictions, device="cpu"):
        return {"name": name, "model": model, "format": fmt, "device": device, "predictions": predictions}

    rows = [row("student pytorch cpu", "student", "pytorch", [0, 1, 1, 0]),
            row("student.int8.tflite litert cpu", "student", "tflite", [0, 1, 0, 0]),
            row("student onnxruntime cpu", "student", "onnx", [0, 1, 1, 0]),
            row("teacher pytorch cpu", "teacher", "pytorch", [1, 1, 1, 1]),
            row("teacher pytorch cuda", "teacher", "pytorch", [1, 1, 1, 0], device="cuda"),
            row("peer.int8-dynamic onnxruntime cpu", "peer", "onnx", [1, 1, 1, 1])]
    add_agreement_with_pytorch(rows)
    got = {r["name"]: r.get("agreement_vs_pytorch") for r in rows}
    assert got["student.int8.tflite litert cpu"] == {"reference": "student pytorch cpu", "agreement": 0.75, "n": 4}
    assert got["student onnxruntime cpu"]["agreement"] == 1.0
    # PyTorch rows are the references, and a file without a PyTorch model in the run has none
    assert got["student pytorch cpu"] is got["teacher pytorch cuda"] is got["peer.int8-dynamic onnxruntime cpu"] is None
