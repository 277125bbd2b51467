"""The benchmark worker's inputs: exact rows back, without one array copy per row."""

import numpy as np

from edgekd.bench.worker import load_inputs, peak_rss_mb


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
