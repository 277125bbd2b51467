"""The runner: hashing, skipping finished stages, resuming after an interruption, atomic folders."""

import json

import pytest

from edgekd.config import load_pipeline
from edgekd.pipeline import run_pipeline
from tests.integration.conftest import TINY_STAGES, write_pipeline

FIRST_THREE = TINY_STAGES[:3]


def _stage_dirs(run_dir):
    return sorted(p.name for p in run_dir.iterdir() if p.is_dir() and not p.name.startswith("."))


def test_interrupted_run_resumes_without_redoing_finished_stages(tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", FIRST_THREE)
    config = load_pipeline(path)
    import edgekd.distill.stage as distill_stage

    real_run = distill_stage.run

    def interrupted(cfg, ctx):
        (ctx.out / "partial.bin").write_bytes(b"half-written")
        raise KeyboardInterrupt

    monkeypatch.setattr(distill_stage, "run", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_pipeline(config)
    run_dir = tmp_path / "runs" / "tiny"
    names = _stage_dirs(run_dir)
    assert [n.split("-")[1] for n in names] == ["data", "teacher", "prune"]  # no distill folder, not even partial
    assert not list(run_dir.glob(".*tmp*"))
    teacher_manifest = json.loads(next(run_dir.glob("01-teacher-*/manifest.json")).read_text())

    monkeypatch.setattr(distill_stage, "run", real_run)
    result = run_pipeline(config)
    assert [r.status for r in result.stages] == ["skipped", "skipped", "ran"]
    # the teacher was not retrained: same manifest, same finish time
    assert json.loads(next(run_dir.glob("01-teacher-*/manifest.json")).read_text()) == teacher_manifest
    again = run_pipeline(config)
    assert [r.status for r in again.stages] == ["skipped"] * 3


def test_manifest_records_config_parent_versions_and_metrics(tmp_path, tiny_model_dir, tiny_csv):
    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", FIRST_THREE[:2])
    result = run_pipeline(load_pipeline(path))
    teacher, prune = (json.loads((r.folder / "manifest.json").read_text()) for r in result.stages)
    assert prune["parent"] == teacher["hash"] and result.stages[1].folder.name.endswith(prune["hash"])
    assert teacher["config"]["epochs"] == 4 and teacher["key"]["settings"]["seed"] == 0
    assert {"torch", "transformers", "onnxruntime", "torch-pruning", "edgekd"} <= set(teacher["versions"])
    assert teacher["metrics"]["validation"]["accuracy"] > 0.8 and teacher["seconds"] > 0  # it learned the toy task
    assert "test" not in teacher["metrics"]  # the test split is read once, by the benchmark
    assert prune["metrics"]["parameters_after"] < prune["metrics"]["parameters_before"]
    assert (result.stages[1].folder / "model" / "model.safetensors").is_file()


def test_changed_config_gets_new_folders_downstream_only(tmp_path, tiny_model_dir, tiny_csv):
    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", FIRST_THREE[:2])
    first = run_pipeline(load_pipeline(path))
    second = run_pipeline(load_pipeline(path, ["stages.prune.head_ratio=0.25"]))
    assert [r.status for r in second.stages] == ["skipped", "ran"]
    assert second.stages[1].folder != first.stages[1].folder and first.stages[1].folder.is_dir()


def test_disk_full_names_the_path_and_keeps_the_run_dir_consistent(tmp_path, tiny_model_dir, tiny_csv, monkeypatch):
    import errno

    from edgekd.errors import EdgekdError

    path = write_pipeline(tmp_path / "p.yaml", tiny_model_dir, tiny_csv, tmp_path / "runs", FIRST_THREE[:2])
    config = load_pipeline(path)
    import edgekd.prune.stage as prune_stage

    def full_disk(cfg, ctx):
        target = ctx.out / "model" / "model.safetensors"
        target.parent.mkdir()
        target.write_bytes(b"partial")
        raise OSError(errno.ENOSPC, "No space left on device", str(target))

    real_run = prune_stage.run
    monkeypatch.setattr(prune_stage, "run", full_disk)
    with pytest.raises(EdgekdError, match=r"stage 2 \(prune\): no space left on the device while writing .*"
                                          r"model\.safetensors"):
        run_pipeline(config)
    run_dir = tmp_path / "runs" / "tiny"
    assert [n.split("-")[1] for n in _stage_dirs(run_dir)] == ["data", "teacher"]
    assert not [p for p in run_dir.iterdir() if ".tmp-" in p.name]  # the half-written stage is gone
    monkeypatch.setattr(prune_stage, "run", real_run)
    assert [r.status for r in run_pipeline(config).stages] == ["skipped", "ran"]
