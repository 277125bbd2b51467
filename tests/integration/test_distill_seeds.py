"""benchmarks/distill_seeds.py end to end on a tiny finished run: both students per seed, stats, resume."""

import json
from pathlib import Path

import pytest

from edgekd.config import load_pipeline
from edgekd.pipeline import run_pipeline
from tests.conftest import load_benchmark_script, write_reviews_csv
from tests.integration.conftest import write_pipeline

ROOT = Path(__file__).parents[2]


def _script():
    return load_benchmark_script("distill_seeds")


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory, tiny_model_dir):
    tmp = tmp_path_factory.mktemp("seeds")
    stages = [{"kind": "teacher", "epochs": 3, "batch_size": 16, "learning_rate": 0.002, "patience": 3},
              {"kind": "prune", "head_ratio": 0.5, "layer_ratio": 0.5, "calibration_batches": 2},
              {"kind": "distill", "epochs": 3, "batch_size": 16, "learning_rate": 0.002, "alpha": 0.8}]
    path = write_pipeline(tmp / "p.yaml", tiny_model_dir, write_reviews_csv(tmp / "r.csv", 160), tmp / "runs", stages)
    return run_pipeline(load_pipeline(path)).run_dir


@pytest.fixture(scope="module")
def first_result(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    script = _script()
    assert script.main([str(tiny_run), "--seeds", "0", "1", "--epochs", "1", "--out", str(out),
                        "--work", str(out / "work")]) == 0
    return out


def test_seeds_script_writes_per_seed_numbers_and_spread(first_result):
    out = first_result
    (json_path,) = out.glob("*-distill-seeds.json")
    (md_path,) = out.glob("*-distill-seeds.md")
    assert json_path.stem == md_path.stem
    result = json.loads(json_path.read_text())
    assert result["schema"] == "edgekd.distill-seeds/v1" and result["seeds"] == [0, 1]
    assert result["epochs_override"] == 1 and result["budget"]["epochs"] == 1 and result["budget"]["batch_size"] == 16
    arms = result["arms"]
    assert set(arms) == {"distilled", "hard-labels"}
    assert arms["distilled"]["loss_weights"]["alpha"] == 0.8
    assert all(w == 0 for w in arms["hard-labels"]["loss_weights"].values())
    for arm in arms.values():
        assert [r["seed"] for r in arm["runs"]] == [0, 1] and all(r["epochs_run"] == 1 for r in arm["runs"])
        tests = [r["test_accuracy"] for r in arm["runs"]]
        s = arm["summary"]["test_accuracy"]
        assert (s["min"], s["max"], s["n"]) == (min(tests), max(tests), 2)
        assert s["mean"] == pytest.approx(sum(tests) / 2, abs=1e-6) and s["range"] == pytest.approx(max(tests) - min(tests))
    for metric in ("validation_accuracy", "test_accuracy", "test_macro_f1"):
        c = result["comparison"][metric]
        d, h = arms["distilled"]["summary"][metric], arms["hard-labels"]["summary"][metric]
        assert c["difference_of_means"] == pytest.approx(d["mean"] - h["mean"], abs=1e-6)
        assert c["spread"] == max(d["range"], h["range"])
        assert c["exceeds_spread"] == (abs(c["difference_of_means"]) > c["spread"])
    assert "larger of the two arms' max-min ranges" in result["spread_definition"]
    md = md_path.read_text()
    assert "| 0 | " in md and "| 1 | " in md and "| test_accuracy | " in md and "beyond the spread?" in md


def test_seeds_script_resumes_without_retraining_finished_seeds(first_result, tiny_run, monkeypatch):
    out = first_result
    script = _script()
    trained = []
    real = script.train_and_score
    monkeypatch.setattr(script, "train_and_score", lambda run, arm, cfg, seed, work: trained.append((seed, arm))
                        or real(run, arm, cfg, seed, work))
    first = json.loads(next(out.glob("*-distill-seeds.json")).read_text())
    later = out / "later"
    assert script.main([str(tiny_run), "--seeds", "0", "1", "2", "--epochs", "1", "--out", str(later),
                        "--work", str(out / "work")]) == 0
    assert trained == [(2, "distilled"), (2, "hard-labels")]  # seeds 0 and 1 were read back
    again = json.loads(next(later.glob("*-distill-seeds.json")).read_text())
    for arm in ("distilled", "hard-labels"):
        assert again["arms"][arm]["runs"][:2] == first["arms"][arm]["runs"]
    # Another budget (the distill stage's own epochs) is kept apart: nothing of the 1-epoch runs is reused.
    class Stop(Exception):
        pass

    def stop(run, arm, cfg, seed, work):
        trained.append(cfg.epochs)
        raise Stop

    trained.clear()
    monkeypatch.setattr(script, "train_and_score", stop)
    with pytest.raises(Stop):
        script.main([str(tiny_run), "--seeds", "0", "--out", str(later), "--work", str(out / "work")])
    assert trained == [3]


def test_seeds_script_help_and_bad_arguments(capsys, tmp_path):
    script = _script()
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in ("--seeds", "--epochs", "--out", "--work", "resume"))
    with pytest.raises(SystemExit):
        script.main([str(tmp_path), "--seeds", "1", "1"])
    assert "--seeds: give distinct seeds >= 0" in capsys.readouterr().err
    assert script.main([str(tmp_path)]) == 1  # not a run directory: one line, no traceback


def test_one_seed_has_no_spread_to_beat():
    script = _script()
    runs = {arm: [{"validation_accuracy": v, "test_accuracy": v, "test_macro_f1": v}] for arm, v in
            (("distilled", 0.9), ("hard-labels", 0.8))}
    _, comparison = script.summarise(runs)
    assert comparison["test_accuracy"]["exceeds_spread"] is None and comparison["test_accuracy"]["spread"] == 0.0
    runs = {arm: [dict(r[0]), {k: v + 0.01 for k, v in r[0].items()}] for arm, r in runs.items()}
    assert script.summarise(runs)[1]["test_accuracy"]["exceeds_spread"] is True  # 0.1 apart, ranges of 0.01
