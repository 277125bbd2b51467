"""Reuse never serves stale results: each input a stage reads is in its key, and only its key."""

import shutil
import subprocess
import sys
import time

import pytest

from edgekd.artifacts import STAGING_MARK
from edgekd.config import load_pipeline
from edgekd.errors import ConfigError
from edgekd.pipeline import run_pipeline
from edgekd.runlock import RunDirBusy
from tests.conftest import make_tiny_model_dir
from tests.integration.conftest import write_pipeline

STAGES = [{"kind": "teacher", "max_steps": 2, "batch_size": 16}, {"kind": "prune", "calibration_batches": 1}]


@pytest.fixture
def setup(tmp_path, tiny_csv):
    """A private copy of the model and the data (the tests edit them in place)."""
    model = make_tiny_model_dir(tmp_path / "model", "bert")
    data = tmp_path / "data.csv"
    shutil.copyfile(tiny_csv, data)
    path = write_pipeline(tmp_path / "p.yaml", model, data, tmp_path / "runs", STAGES)
    first = run_pipeline(load_pipeline(path))
    assert [r.status for r in first.stages] == ["ran", "ran"]
    return tmp_path, path, model, data


def _statuses(path, *overrides):
    result = run_pipeline(load_pipeline(path, list(overrides)))
    data_folders = sorted(p.name for p in result.run_dir.glob("00-data-*"))
    return [r.status for r in result.stages], data_folders


def test_unchanged_rerun_reuses_everything(setup):
    _, path, _, _ = setup
    assert _statuses(path)[0] == ["skipped", "skipped"]


def test_a_stage_revision_reruns_that_stage_and_after_only(setup, monkeypatch):
    """A stage whose code now writes something else is not reused from a folder older code wrote."""
    import dataclasses

    from edgekd import stages

    _, path, _, _ = setup
    before = sorted(p.name for p in (path.parent / "runs").rglob("02-prune-*"))
    monkeypatch.setitem(stages.STAGES, "teacher", dataclasses.replace(stages.STAGES["teacher"], revision=1))
    assert _statuses(path)[0] == ["ran", "ran"]
    monkeypatch.setitem(stages.STAGES, "teacher", dataclasses.replace(stages.STAGES["teacher"], revision=0))
    monkeypatch.setitem(stages.STAGES, "prune", dataclasses.replace(stages.STAGES["prune"], revision=1))
    assert _statuses(path)[0] == ["skipped", "ran"]
    after = sorted(p.name for p in (path.parent / "runs").rglob("02-prune-*"))
    assert len(after) == 3 and before[0] in after  # revision 0 keeps the key it had before revisions existed


def test_other_model_source_reruns_teacher_and_after_but_keeps_the_split(setup):
    tmp, path, _, _ = setup
    other = make_tiny_model_dir(tmp / "other-model", "bert", seed=1)
    statuses, data = _statuses(path, f"model.source={other}")
    assert statuses == ["ran", "ran"] and len(data) == 1


def test_weights_edited_in_place_rerun_teacher_and_after(setup):
    _, path, model, _ = setup
    weights = model / "model.safetensors"
    blob = bytearray(weights.read_bytes())
    blob[-1] ^= 0x01  # one bit of the last tensor: same size, different content
    time.sleep(0.01)
    weights.write_bytes(bytes(blob))
    statuses, data = _statuses(path)
    assert statuses == ["ran", "ran"] and len(data) == 1


def test_touched_but_unchanged_weights_are_reused(setup):
    _, path, model, _ = setup
    (model / "model.safetensors").touch()  # new mtime, same bytes: the stored digest is recomputed, and equal
    assert _statuses(path)[0] == ["skipped", "skipped"]


def test_data_file_edited_in_place_reruns_the_split_and_every_stage(setup):
    _, path, _, data = setup
    with open(data, "a") as f:
        f.write("a brilliant warm film,fresh\n")
    statuses, folders = _statuses(path)
    assert statuses == ["ran", "ran"] and len(folders) == 2


def test_max_length_reruns_every_stage_but_not_the_split(setup):
    _, path, _, _ = setup
    statuses, folders = _statuses(path, "model.max_length=24")
    assert statuses == ["ran", "ran"] and len(folders) == 1


def test_a_second_run_on_a_busy_run_dir_refuses_and_names_the_holder(setup):
    tmp, path, _, _ = setup
    run_dir = tmp / "runs" / "tiny"
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time\nfrom edgekd.runlock import RunLock\n"
         f"with RunLock({str(run_dir)!r}):\n    print('held', flush=True)\n    time.sleep(60)\n"],
        stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "held"
        before = sorted(p.name for p in run_dir.iterdir())
        with pytest.raises(RunDirBusy, match=f"pid {holder.pid}"):
            run_pipeline(load_pipeline(path))
        assert sorted(p.name for p in run_dir.iterdir()) == before  # nothing touched
    finally:
        holder.kill()
        holder.wait()
    assert _statuses(path)[0] == ["skipped", "skipped"]  # the lock died with its holder


def test_cleanup_removes_only_marked_staging_folders(setup):
    tmp, path, _, _ = setup
    run_dir = tmp / "runs" / "tiny"
    ours = run_dir / ".01-teacher-abc.tmp-x1"
    ours.mkdir()
    (ours / STAGING_MARK).write_text("")
    users = run_dir / ".my-notes.tmp-keep"
    users.mkdir()
    (users / "notes.txt").write_text("mine")
    run_pipeline(load_pipeline(path))
    assert not ours.exists() and (users / "notes.txt").read_text() == "mine"


@pytest.mark.parametrize("name", ["..", ".", "a/b", ".hidden"])
def test_run_names_are_plain_folder_names(tmp_path, name):
    path = tmp_path / "p.yaml"
    path.write_text("stages:\n  - kind: teacher\n")
    with pytest.raises(ConfigError, match="name"):
        load_pipeline(path, [f"name={name}"])


def test_an_interrupted_forced_rerun_never_leaves_stale_stages_after_it(setup, monkeypatch):
    """--rerun teacher, stopped after the teacher finished: the next plain run must redo prune, not reuse it."""
    _, path, _, _ = setup
    import edgekd.prune.stage as prune_stage

    def interrupted(cfg, ctx):
        raise KeyboardInterrupt

    real_run = prune_stage.run
    monkeypatch.setattr(prune_stage, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(load_pipeline(path), force=frozenset({"teacher"}))
    monkeypatch.setattr(prune_stage, "run", real_run)
    assert _statuses(path)[0] == ["skipped", "ran"]
    assert _statuses(path)[0] == ["skipped", "skipped"]


def test_a_relative_run_dir_works(setup, monkeypatch):
    tmp, path, _, _ = setup
    monkeypatch.chdir(tmp)
    result = run_pipeline(load_pipeline(path, ["output_dir=runs"]))
    assert result.run_dir.is_absolute() and [r.status for r in result.stages] == ["skipped", "skipped"]


def test_a_latency_target_is_keyed_by_the_machine_and_plain_ratios_are_not(setup, monkeypatch):
    """A target's shape is picked by timing candidates here: another machine must pick again."""
    tmp, plain, model, data = setup
    target = {"kind": "prune", "calibration_batches": 1, "target": {"latency_ms": 1000.0, "repeats": 2, "warmup": 1}}
    path = write_pipeline(tmp / "target.yaml", model, data, tmp / "runs", [STAGES[0], target])
    assert _statuses(path)[0] == ["skipped", "ran"]  # the teacher is shared with the plain pipeline
    assert _statuses(path)[0] == ["skipped", "skipped"]
    monkeypatch.setattr("edgekd.pipeline.machine_fingerprint", lambda: {"cpu": "another machine"})
    assert _statuses(path)[0] == ["skipped", "ran"]
    assert _statuses(plain)[0] == ["skipped", "skipped"]
