"""The benchmark's measuring machinery: inputs, timing loop, peak memory, load accounting."""

import subprocess
import sys
import time

import numpy as np
import psutil

from edgekd.bench.core import LoadSampler
from edgekd.bench.worker import _timed, load_inputs, peak_rss_mb


def test_load_inputs_returns_the_rows_as_views_of_one_array(tmp_path):
    rows = [np.arange(n, dtype=np.int64) + 100 * n for n in (3, 1, 7, 2)]
    path = tmp_path / "inputs.npz"
    np.savez(path, real_ids=np.concatenate(rows), real_offsets=np.cumsum([0] + [len(r) for r in rows]),
             labels=np.array([0, 1, 1, 0]), fixed_ids=np.arange(8))
    real, labels, fixed = load_inputs(str(path))
    assert [r.tolist() for r in real] == [r.tolist() for r in rows]
    assert labels.tolist() == [0, 1, 1, 0] and fixed.tolist() == list(range(8))
    # One backing buffer for all rows: a copy per row is what inflated peak RSS by hundreds of MB.
    assert len({id(r.base) for r in real}) == 1


def test_peak_rss_is_a_positive_number_of_megabytes():
    assert 1.0 < peak_rss_mb() < 1e6


BUSY = "import time\nt = time.process_time()\nwhile time.process_time() - t < 1.5: pass"


def test_load_sampler_counts_other_processes_but_not_its_own_workers():

    with LoadSampler(interval=0.2) as own:
        subprocess.run([sys.executable, "-c", BUSY], check=True)  # a worker: waited for inside
    with LoadSampler(interval=0.2) as other:
        stranger = subprocess.Popen([sys.executable, "-c", BUSY])
        while psutil.Process(stranger.pid).status() != psutil.STATUS_ZOMBIE:
            time.sleep(0.05)
    stranger.wait()  # reaped after the window: its CPU time was someone else's, like any other process's
    # 1.5 s of CPU over a window of about 1.6 s; a busy machine only raises the second number
    assert other.summary()["other_processes_cores_mean"] > 0.5
    assert own.summary()["other_processes_cores_mean"] < other.summary()["other_processes_cores_mean"]


class _Sleeper:
    """A runner that takes about 2 ms per call (the worker's runner interface)."""

    def __init__(self):
        self.calls = []

    def __call__(self, rows):
        self.calls.append(rows)
        time.sleep(0.002)

    def sync(self):
        pass


def test_timed_runs_at_least_runs_and_until_min_seconds():
    runner = _Sleeper()
    assert len(_timed(runner, lambda i: [i], runs=5, warmup=2)) == 5
    assert runner.calls == [[0], [1], [0], [1], [2], [3], [4]]  # warm-up, then the timed inputs in order
    times = _timed(_Sleeper(), lambda i: [i], runs=5, warmup=1, min_seconds=0.1)
    assert len(times) > 5 and sum(times) >= 0.1
    assert len(_timed(_Sleeper(), lambda i: [i], runs=2, warmup=1, min_seconds=60)) == 200  # capped at 100x runs
