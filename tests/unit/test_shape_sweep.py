"""The shape sweep's variants share the default run's teacher, and the frontier tables read them without mixing
them into the README's default-pipeline numbers."""

import json
import os

import pytest

from tests.conftest import load_benchmark_script

TEACHER, STUDENT, FP32 = "teacher onnxruntime cpu", "student.int8-dynamic onnxruntime cpu", "student onnxruntime cpu"


def _summary(teacher_folder: str, distill_folder: str, teacher_acc: float, fp32_acc: float, int8_acc: float,
             peer_acc: float | None = None, variant: str | None = None, val_acc: float | None = None,
             best_epoch: int = 3) -> dict:
    """A result file of the shape benchmarks/run_default.py writes, cut to what the frontier reads."""
    def row(name, role, precision, acc, size, p50):
        return {"name": name, "role": role, "runtime": "onnxruntime", "precision": precision, "accuracy": acc,
                "file_bytes": size, "latency_ms": {"real_b1_t1": {"p50": p50}},
                "speedup_vs": {} if role == "teacher" else
                {TEACHER: {"real_b1_t1": {"median": 4.0 / p50, "low": 3.9 / p50, "high": 4.1 / p50}}}}
    rows = [row(TEACHER, "teacher", "fp32", teacher_acc, 91_000_000, 4.0),
            row(FP32, "student", "fp32", fp32_acc, 45_000_000, 0.9),
            row(STUDENT, "student", "int8-dynamic", int8_acc, 8_500_000, 0.5)]
    if peer_acc is not None:
        rows.append(row("peer.int8-dynamic onnxruntime cpu", "peer", "int8-dynamic", peer_acc, 23_000_000, 2.5))
    stages = [{"kind": "teacher", "folder": teacher_folder, "metrics": {"validation": {"accuracy": teacher_acc}}},
              {"kind": "prune", "folder": "02-prune-x", "metrics": {
                  "kept_layers": [0, 1, 2, 5], "hidden_after": 320, "layout": {"heads": [6], "ffn": [768]}}},
              {"kind": "distill", "folder": distill_folder,
               "metrics": {"epochs_run": 3, "best_epoch": best_epoch,
                           "validation": {"accuracy": fp32_acc + 0.01 if val_acc is None else val_acc}}}]
    headline = {"student": STUDENT, "teacher_onnxruntime": TEACHER, "setting": "real_b1_t1",
                "teacher_accuracy": teacher_acc, "accuracy_delta_pt": round(100 * (int8_acc - teacher_acc), 2)}
    if peer_acc is not None:
        headline["peer_accuracy"] = peer_acc
    out = {"headline": headline, "report": {"task": "text-classification", "stages": stages, "rows": rows}}
    if variant:
        out["variant"] = {"name": variant, "overrides": ["stages.prune.layer_ratio=0.167"]}
    return out


def _write(folder, name, summary):
    (folder / f"{name}.json").write_text(json.dumps(summary))


def test_gap_rows_take_each_trainings_newest_result_and_split_the_gap(tmp_path):
    frontier = load_benchmark_script("frontier")
    _write(tmp_path, "a-old", _summary("t1", "d1", 0.85, 0.84, 0.83, 0.845))
    _write(tmp_path, "b-requantized", _summary("t1", "d1", 0.85, 0.84, 0.835, 0.845))  # same training, newer
    _write(tmp_path, "c-other", _summary("t2", "d2", 0.84, 0.835, 0.836, 0.842, best_epoch=2))
    _write(tmp_path, "d-variant", _summary("t2", "d3", 0.84, 0.80, 0.79, 0.842, variant="5-layers"))
    loaded = [(p.stem, json.loads(p.read_text())) for p in sorted(tmp_path.glob("*.json"))]
    rows = frontier.gap_rows(loaded)
    assert [r["result"] for r in rows] == ["b-requantized", "c-other"]  # one per training, no variant
    b = rows[0]
    assert (b["peer"], b["fp32"], b["int8"], b["quantizing"]) == (-0.5, -1.0, -1.5, -0.5)
    table = "\n".join(frontier.gap_table(loaded))
    # the epoch early stopping kept is shown but is not part of the recipe: both trainings count
    assert "distilled 3 epochs (best 2)" in rows[1]["how"] and "(best" not in rows[0]["how"]
    # means of both trainings (same recipe): peer -0.5/+0.2, fp32 -1.0/-0.5, int8 -1.5/-0.4, quantizing -0.5/+0.1
    assert "| -0.15 (n=2) | +0.25 (n=2) | -0.75 (n=2) | -0.95 (n=2) | -0.20 (n=2) |" in table and "mean of the 2 trainings" in table


def test_shape_table_puts_variants_beside_the_default_result_of_their_teacher(tmp_path):
    frontier = load_benchmark_script("frontier")
    _write(tmp_path, "a-default-other-teacher", _summary("t0", "d0", 0.85, 0.84, 0.83))
    _write(tmp_path, "b-default", _summary("t1", "d1", 0.85, 0.84, 0.83, 0.845))
    _write(tmp_path, "c-5-layers", _summary("t1", "d2", 0.85, 0.848, 0.845, 0.845, variant="5-layers"))
    _write(tmp_path, "d-3-layers", _summary("t1", "d3", 0.85, 0.80, 0.79, 0.845, variant="3-layers", val_acc=0.87))
    text = frontier.render(tmp_path)
    table = text.split("## Other shapes from the same teacher", 1)[1].split("##", 1)[0]
    lines = [line for line in table.splitlines() if line.startswith("| [")]
    assert [line.split("]")[0] for line in lines] == ["| [b-default", "| [c-5-layers", "| [d-3-layers"]
    assert "none (the default pipeline)" in lines[0] and "stages.prune.layer_ratio=0.167" in lines[1]
    # 8x faster, -0.5 points, 10.7x smaller: the variant meets the goal; the default (-2.0 points) does not
    assert lines[1].split(" | ")[8] == "yes" and lines[0].split(" | ")[8] == "no"
    # the fp32 student on validation and test, and the int8 student on test, each against the same teacher
    assert lines[1].split(" | ")[4:7] == ["+0.80", "-0.20", "-0.50"]
    # validation: default 0.00 (0.84 + 0.01 vs 0.85), 5-layers +0.80, 3-layers +2.00; test: -1.00, -0.20, -5.00
    assert ("ranked by validation, what selection may use: 3-layers, 5-layers, default. Ranked by test, which only "
            "reports: 5-layers, default, 3-layers.") in table


def test_readme_block_ignores_variants(tmp_path):
    readme = load_benchmark_script("readme_results")
    _write(tmp_path, "2026-01-01T000000-x", _summary("t1", "d1", 0.85, 0.84, 0.83))
    _write(tmp_path, "2026-01-02T000000-x--5-layers", _summary("t1", "d2", 0.85, 0.84, 0.84, variant="5-layers"))
    assert [p.stem for p in readme.results_in_order(tmp_path)] == ["2026-01-01T000000-x"]


def test_a_variant_changes_only_its_fields_and_keeps_the_teacher_and_data():
    sweep = load_benchmark_script("shape_sweep")
    from edgekd.config import load_pipeline

    default = load_pipeline(sweep.PIPELINE)
    for name, overrides in sweep.VARIANTS.items():
        config = sweep.variant_config(name)
        kinds = [s.kind for s in config.stages]
        assert "ablation" not in kinds and kinds == [s.kind for s in default.stages if s.kind != "ablation"]
        stages = {s.kind: s for s in config.stages}
        assert stages["mobile"].targets == ["ort"]
        # The teacher's key is made of these: equal, so the variant reuses the default run's teacher.
        assert stages["teacher"] == next(s for s in default.stages if s.kind == "teacher")
        assert (config.model, config.data, config.seed) == (default.model, default.data, default.seed)
        changed = set()
        for item in overrides:
            dotted, value = item.split("=")
            _, kind, field = dotted.split(".")
            assert getattr(stages[kind], field) == pytest.approx(float(value))
            changed.add(kind)
        for stage in default.stages:  # every other stage is the default's own, mobile apart from its targets
            if stage.kind not in changed | {"ablation", "mobile"}:
                assert stages[stage.kind] == stage, (name, stage.kind)


def test_shared_stages_are_hard_links_and_linking_again_changes_nothing(tmp_path):
    sweep = load_benchmark_script("shape_sweep")
    default = tmp_path / "default"
    for folder in ("00-data-a", "01-teacher-b", "02-prune-c", "09-peer-d"):
        (default / folder / "model").mkdir(parents=True)
        (default / folder / "model" / "weights.bin").write_bytes(folder.encode())
    (default / "run.json").write_text(json.dumps({"data": "00-data-a", "stages": [
        {"kind": "teacher", "folder": "01-teacher-b"}, {"kind": "prune", "folder": "02-prune-c"},
        {"kind": "peer", "folder": "09-peer-d"}]}))
    variant = tmp_path / "variant"
    sweep.link_shared_stages(default, variant)
    assert sorted(p.name for p in variant.iterdir()) == ["00-data-a", "01-teacher-b"]  # not the student's stages
    for folder in ("00-data-a", "01-teacher-b"):
        assert os.path.samefile(default / folder / "model" / "weights.bin", variant / folder / "model" / "weights.bin")
    sweep.link_shared_stages(default, variant)  # a rerun (resume) finds the folders there and leaves them
    assert (variant / "01-teacher-b" / "model" / "weights.bin").read_bytes() == b"01-teacher-b"


def test_the_readme_line_gives_the_recipes_mean_gap_and_each_variant(tmp_path):
    frontier = load_benchmark_script("frontier")
    _write(tmp_path, "a", _summary("t1", "d1", 0.85, 0.84, 0.835, 0.845))
    _write(tmp_path, "b", _summary("t2", "d2", 0.84, 0.835, 0.836, 0.842))
    _write(tmp_path, "c", _summary("t2", "d3", 0.84, 0.80, 0.79, 0.842, variant="5-layers"))
    line = frontier.summary_line(frontier.load_results(tmp_path))
    # int8 -1.5 and -0.4 -> -0.95; fp32 -1.0 and -0.5 -> -0.75; validation +0.25; peer -0.5 and +0.2 -> -0.15
    assert "Over the 2 trainings of this recipe" in line and "by -0.95 points on average" in line
    assert "(the fp32 student -0.75, and +0.25 on validation; the teacher's own int8, the peer, -0.15)" in line
    assert line.endswith("5-layers 8.00×, -5.00 points, 10.71× smaller.")
    assert frontier.summary_line([]) == ""


def test_a_variant_measured_again_counts_once_and_other_teachers_stay_out(tmp_path):
    frontier = load_benchmark_script("frontier")
    _write(tmp_path, "a-old-teacher-5-layers", _summary("t0", "d0", 0.85, 0.84, 0.83, variant="5-layers"))
    _write(tmp_path, "b-5-layers", _summary("t1", "d1", 0.85, 0.84, 0.83, variant="5-layers"))
    _write(tmp_path, "c-5-layers-again", _summary("t1", "d1", 0.85, 0.84, 0.835, variant="5-layers"))
    loaded = frontier.load_results(tmp_path)
    assert [n for n, _ in frontier.sweep_variants(loaded)] == ["c-5-layers-again"]
    line = frontier.summary_line(loaded + [("z", _summary("t1", "d9", 0.85, 0.84, 0.83))])
    assert line.count("5-layers") == 1 and "5-layers 8.00×, -1.50 points" in line


def test_an_interrupted_link_is_redone_not_taken_for_a_finished_stage(tmp_path):
    sweep = load_benchmark_script("shape_sweep")
    default = tmp_path / "default"
    (default / "01-teacher-b" / "model").mkdir(parents=True)
    (default / "01-teacher-b" / "manifest.json").write_text("{}")
    (default / "01-teacher-b" / "model" / "weights.bin").write_bytes(b"w")
    (default / "00-data-a").mkdir()
    (default / "run.json").write_text(json.dumps({"data": "00-data-a",
                                                  "stages": [{"kind": "teacher", "folder": "01-teacher-b"}]}))
    variant = tmp_path / "variant"
    (variant / ".linking-01-teacher-b").mkdir(parents=True)  # what an interrupted link leaves: manifest, no model
    os.link(default / "01-teacher-b" / "manifest.json", variant / ".linking-01-teacher-b" / "manifest.json")
    sweep.link_shared_stages(default, variant)
    assert (variant / "01-teacher-b" / "model" / "weights.bin").read_bytes() == b"w"
    assert not (variant / ".linking-01-teacher-b").exists()


def test_a_variants_result_files_are_tagged_named_and_carry_no_plot_links(tmp_path):
    from types import SimpleNamespace

    run_default = load_benchmark_script("run_default")
    run_dir, bench = tmp_path / "run", tmp_path / "run" / "11-bench-x"
    bench.mkdir(parents=True)
    (bench / "manifest.json").write_text(json.dumps({"kind": "bench", "finished": "2026-01-02T03:04:05+0000"}))
    report = {"machine": {"cpu": "x"}, "bench": {"load": {"other_processes_cores_mean": 0.0}},
              "stages": [{"kind": "bench", "seconds": 1.5}], "headline": {"student": STUDENT}}
    (run_dir / "report.json").write_text(json.dumps(report))
    (run_dir / "report.md").write_text("# r\n![accuracy](report.png)\nkept\n![spread](report_latency.png)\nend\n")
    result = SimpleNamespace(run_dir=run_dir, stages=[SimpleNamespace(kind="bench", folder=bench, status="ran")])
    variant = {"name": "5-layers", "overrides": ["stages.prune.layer_ratio=0.167"]}
    stem, summary = run_default.write_result(result, "p", tmp_path, variant)
    assert stem.name == "2026-01-02T030405-p--5-layers" and summary["variant"] == variant
    assert json.loads(stem.with_suffix(".json").read_text())["stage_seconds"] == {"bench": 1.5}
    md = stem.with_suffix(".md").read_text()
    assert md.startswith("Variant `5-layers` of the default pipeline: stages.prune.layer_ratio=0.167")
    assert "png" not in md and "kept\n" in md and md.endswith("end\n")
    stem, summary = run_default.write_result(result, "p", tmp_path)  # the default pipeline's own: no tag
    assert stem.name == "2026-01-02T030405-p" and "variant" not in summary


def test_the_seed_spread_is_read_from_the_newest_classifier_seeds_result(tmp_path):
    frontier = load_benchmark_script("frontier")
    assert "benchmarks/distill_seeds.py measures" in frontier.seed_spread(tmp_path)  # none yet: a pointer, no number
    runs = [{"test_accuracy": a} for a in (0.8395, 0.8432, 0.8416)]
    (tmp_path / "2026-01-01T000000-distill-seeds.json").write_text(json.dumps({"arms": {"distilled": {"runs": runs}}}))
    (tmp_path / "2026-01-02T000000-lm-distill-seeds.json").write_text("{}")  # the LM's own seeds: not this task's
    assert frontier.seed_spread(tmp_path) == ("retraining the same student with 3 seeds moved its test accuracy by up "
                                              "to 0.37 points (2026-01-01T000000-distill-seeds).")
