"""benchmarks/lm_distill_seeds.py end to end on a tiny finished causal-lm run: both students per seed with
equal steps, the pipeline's own numbers reproduced at its seed, stats, resume, one-line errors."""

import json
import shutil

import pytest

from edgekd.pipeline import run_pipeline
from tests.conftest import load_benchmark_script
from tests.integration.test_causal_lm_pipeline import LM_STAGES, write_lm_pipeline
from tests.lm_fixtures import make_tiny_causal_lm_dir, write_documents


def _script():
    return load_benchmark_script("lm_distill_seeds")


def _manifest(run_dir, kind):
    return json.loads(next(run_dir.glob(f"0*-{kind}-*/manifest.json")).read_text())


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lm-seeds")
    model_dir = make_tiny_causal_lm_dir(tmp / "model", "llama")
    config = write_lm_pipeline(tmp / "p.yaml", model_dir, write_documents(tmp / "docs", 80), tmp / "runs",
                               stages=LM_STAGES[:4])  # teacher, prune, distill (8 teacher-written windows), ablation
    return run_pipeline(config).run_dir


@pytest.fixture(scope="module")
def first_result(tiny_run, tmp_path_factory):
    out = tmp_path_factory.mktemp("out")
    assert _script().main([str(tiny_run), "--seeds", "0", "1", "--max-steps", "4", "--eval-windows", "6",
                           "--out", str(out), "--work", str(out / "work")]) == 0
    return out


def test_both_students_per_seed_with_equal_steps_and_the_spread(first_result):
    out = first_result
    (json_path,) = out.glob("*-lm-distill-seeds.json")
    (md_path,) = out.glob("*-lm-distill-seeds.md")
    assert json_path.stem == md_path.stem
    result = json.loads(json_path.read_text())
    assert result["schema"] == "edgekd.lm-distill-seeds/v1" and result["seeds"] == [0, 1]
    assert result["max_steps_override"] == 4 and result["budget"]["batch_size"] == 8
    # The tiny run's test split has more than 6 windows of 32 tokens: the cap applies; validation is the run's own.
    assert result["windows"]["test"] == 6 and result["windows"]["validation"] > 6
    arms = result["arms"]
    assert set(arms) == {"distilled", "hard-labels"}
    d_runs, h_runs = arms["distilled"]["runs"], arms["hard-labels"]["runs"]
    assert all(r["loss"] == {"kind": "forward_kl", "alpha": 0.9, "temperature": 1.0, "generated_sequences": 8}
               for r in d_runs)
    assert all(r["loss"]["alpha"] == 0 and r["loss"]["generated_sequences"] == 0 for r in h_runs)
    for d, h in zip(d_runs, h_runs):  # the same steps (so the same tokens) in every seed
        assert d["seed"] == h["seed"] and d["steps"] == h["steps"] == 4 and d["tokens_seen"] == h["tokens_seen"]
    # Two seeds give two different distilled students (batch order and the teacher's sampled text change).
    assert d_runs[0]["validation_perplexity"] != d_runs[1]["validation_perplexity"]
    for metric, lower_is_better in (("validation_perplexity", True), ("test_perplexity", True),
                                    ("test_next_token_accuracy", False)):
        d, h = arms["distilled"]["summary"][metric], arms["hard-labels"]["summary"][metric]
        values = [r[metric] for r in d_runs]
        assert (d["min"], d["max"], d["n"]) == (min(values), max(values), 2)
        assert d["mean"] == pytest.approx(sum(values) / 2, abs=1e-6)
        c = result["comparison"][metric]
        assert c["spread"] == max(d["range"], h["range"]) and c["lower_is_better"] == lower_is_better
        gain = h["mean"] - d["mean"] if lower_is_better else d["mean"] - h["mean"]
        assert c["distilled_gain"] == pytest.approx(gain, abs=1e-6)
        assert c["distilled_beats_beyond_spread"] == (c["distilled_gain"] > c["spread"])
    md = md_path.read_text()
    assert "| 0 | 4 | " in md and "| 1 | 4 | " in md and "| test_perplexity | " in md and "beyond the spread?" in md


def test_at_the_pipeline_seed_it_reproduces_the_distill_and_ablation_stages(tiny_run, tmp_path):
    # No --max-steps: the distill stage's own budget at the pipeline's seed 0; both students come out exactly as
    # the run's distill and ablation stages made them (the same config, steps and data, so the same numbers).
    assert _script().main([str(tiny_run), "--seeds", "0", "--out", str(tmp_path), "--work", str(tmp_path / "w")]) == 0
    result = json.loads(next(tmp_path.glob("*-lm-distill-seeds.json")).read_text())
    distilled, hard = result["arms"]["distilled"]["runs"][0], result["arms"]["hard-labels"]["runs"][0]
    stage = _manifest(tiny_run, "distill")["metrics"]
    ablation = _manifest(tiny_run, "ablation")["metrics"]["variants"]["hard-labels"]
    assert distilled["steps"] == hard["steps"] == stage["steps"] == ablation["steps"]
    assert distilled["validation_perplexity"] == stage["validation"]["perplexity"]
    assert hard["validation_perplexity"] == ablation["validation"]["perplexity"]
    assert result["comparison"]["test_perplexity"]["distilled_beats_beyond_spread"] is None  # one seed: no spread


def test_resume_trains_only_what_is_missing(first_result, tiny_run, monkeypatch):
    out, script = first_result, _script()
    first = json.loads(next(out.glob("*-lm-distill-seeds.json")).read_text())
    trained = []
    real = script.train_and_score

    def record(run, arm, cfg, seed, work):
        trained.append((seed, arm, cfg.max_steps))
        return real(run, arm, cfg, seed, work)

    monkeypatch.setattr(script, "train_and_score", record)
    work = out / "work"
    (next(work.glob("*/seed-1-hard-labels.json"))).unlink()  # interrupted after seed 1's distilled student
    later = out / "later"
    args = ["--max-steps", "4", "--eval-windows", "6", "--out", str(later), "--work", str(work)]
    assert script.main([str(tiny_run), "--seeds", "0", "1", "2", *args]) == 0
    # The missing non-distilled student takes its steps from the stored distilled result of that seed.
    assert trained == [(1, "hard-labels", 4), (2, "distilled", 4), (2, "hard-labels", 4)]
    again = json.loads(next(later.glob("*-lm-distill-seeds.json")).read_text())
    assert again["arms"]["distilled"]["runs"][:2] == first["arms"]["distilled"]["runs"]
    assert again["arms"]["hard-labels"]["runs"][0] == first["arms"]["hard-labels"]["runs"][0]

    # Another budget or another test-window count is kept apart: nothing of these runs is reused.
    class Stop(Exception):
        pass

    def stop(run, arm, cfg, seed, work):
        trained.append((seed, arm, cfg.max_steps))
        raise Stop

    monkeypatch.setattr(script, "train_and_score", stop)
    for other in (["--max-steps", "3", "--eval-windows", "6"], ["--max-steps", "4", "--eval-windows", "5"]):
        trained.clear()
        with pytest.raises(Stop):
            script.main([str(tiny_run), "--seeds", "0", *other, "--out", str(later), "--work", str(work)])
        assert trained == [(0, "distilled", int(other[1]))]


def test_errors_are_one_line(tiny_run, tmp_path, caplog, capsys):
    script = _script()
    with pytest.raises(SystemExit) as done:
        script.main(["--help"])
    assert done.value.code == 0
    text = capsys.readouterr().out
    assert all(option in text for option in ("--seeds", "--max-steps", "--eval-windows", "--out", "--work", "resume"))
    with pytest.raises(SystemExit):
        script.main([str(tiny_run), "--eval-windows", "0"])
    assert "--eval-windows: at least 1 (got 0)" in capsys.readouterr().err
    # A run whose stages stop before distill (here: the tiny run, its distill and ablation stages cut off).
    cut = tmp_path / "cut"
    shutil.copytree(tiny_run, cut, ignore=lambda folder, names: [n for n in names if "-distill-" in n
                                                                 or "-ablation-" in n])
    summary = json.loads((cut / "run.json").read_text())
    summary["stages"] = [s for s in summary["stages"] if s["kind"] not in ("distill", "ablation")]
    (cut / "run.json").write_text(json.dumps(summary))
    caplog.clear()
    assert script.main([str(cut), "--out", str(tmp_path / "o")]) == 1
    (record,) = [r for r in caplog.records if r.levelname == "ERROR"]
    assert "no distill stage output" in record.message and "\n" not in record.message
    assert not (tmp_path / "o").exists()
    # A classifier run is pointed at the other script.
    (tmp_path / "cls").mkdir()
    (tmp_path / "cls" / "run.json").write_text(json.dumps({"pipeline": {"task": "text-classification"},
                                                            "stages": []}))
    caplog.clear()
    assert script.main([str(tmp_path / "cls")]) == 1
    assert "benchmarks/distill_seeds.py" in caplog.records[-1].message


def test_summary_direction_and_one_seed():
    script = _script()
    one = {"distilled": [{"validation_perplexity": 5.0, "test_perplexity": 5.0, "test_next_token_accuracy": 0.5}],
           "hard-labels": [{"validation_perplexity": 6.0, "test_perplexity": 6.0, "test_next_token_accuracy": 0.4}]}
    assert script.summarise(one)[1]["test_perplexity"]["distilled_beats_beyond_spread"] is None
    two = {arm: [r[0], {k: v + 0.01 for k, v in r[0].items()}] for arm, r in one.items()}
    comparison = script.summarise(two)[1]
    # Lower perplexity wins: the distilled arm is 1.0 lower, ranges 0.01.
    assert comparison["test_perplexity"]["distilled_gain"] == pytest.approx(1.0)
    assert comparison["test_perplexity"]["distilled_beats_beyond_spread"] is True
    assert comparison["test_next_token_accuracy"]["distilled_gain"] == pytest.approx(0.1)
    swapped = {"distilled": two["hard-labels"], "hard-labels": two["distilled"]}
    assert script.summarise(swapped)[1]["validation_perplexity"]["distilled_beats_beyond_spread"] is False
