"""The ablation: a student trained without distillation, with the distill stage's budget, scored beside it."""

import copy
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from edgekd.ablation.config import HARD_LABELS, AblationConfig, loss_terms
from edgekd.ablation.core import train_variant, variant_configs
from edgekd.config import load_pipeline, validate_pipeline
from edgekd.data import make_splits
from edgekd.distill.config import DistillConfig
from edgekd.distill.core import distill
from edgekd.errors import ConfigError
from edgekd.models import load_classifier
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import prune
from tests.conftest import build_tokenizer, load_benchmark_script, make_texts, make_tiny_model_dir
from tests.integration.conftest import write_pipeline
from tests.unit.test_prune import _calibration

ROOT = Path(__file__).parents[2]
CPU = torch.device("cpu")


def _pipeline(drop_terms: list[str], distill: dict | None = None) -> dict:
    return {"name": "p", "model": {"source": "builtin:all-MiniLM-L6-v2"},
            "stages": [{"kind": "teacher"}, {"kind": "prune"}, {"kind": "distill", **(distill or {})},
                       {"kind": "ablation", "drop_terms": drop_terms}]}


def test_drop_terms_are_checked_against_distill_weight_fields():
    assert {"alpha", "beta", "gamma"} <= set(loss_terms()) and "temperature" not in loss_terms()
    with pytest.raises(ConfigError, match=r"stages\.3\.ablation\.drop_terms: unknown loss term 'temperature'; "
                                          r"allowed: alpha, beta, gamma"):
        validate_pipeline(_pipeline(["temperature"]))
    with pytest.raises(ConfigError, match="each loss term may be dropped once"):
        validate_pipeline(_pipeline(["beta", "beta"]))
    with pytest.raises(ConfigError, match="nothing to train: set hard_labels: true"):
        validate_pipeline({**_pipeline([]), "stages": _pipeline([])["stages"][:3] + [
            {"kind": "ablation", "hard_labels": False}]})
    with pytest.raises(ConfigError, match=r"stage 1 \(ablation\) needs teacher, pruned, student"):
        validate_pipeline({**_pipeline([]), "stages": [{"kind": "ablation"}]})
    assert validate_pipeline(_pipeline(["beta"])).stages[3].provides() == ["student-hard-labels", "student-no-beta"]


def test_variants_change_only_loss_weights_of_the_distill_config():
    base = DistillConfig(epochs=5, batch_size=8, learning_rate=3e-4, warmup_ratio=0.2, patience=3, max_steps=40,
                         alpha=0.5, beta=2.0)
    variants = variant_configs(base, AblationConfig(drop_terms=["beta"]))
    assert list(variants) == [HARD_LABELS, "no-beta"]
    hard, no_beta = variants[HARD_LABELS], variants["no-beta"]
    assert all(getattr(hard, t) == 0 for t in loss_terms())
    assert (no_beta.alpha, no_beta.beta) == (0.5, 0.0)
    budget = ("epochs", "batch_size", "learning_rate", "weight_decay", "warmup_ratio", "patience", "max_steps",
              "group_by_length", "device", "bf16", "temperature", "layer_map")
    for v in (hard, no_beta):
        assert {k: getattr(v, k) for k in budget} == {k: getattr(base, k) for k in budget}
    with pytest.raises(ConfigError, match="'gamma' is already 0 in the distill stage.*switched on there: alpha, beta"):
        variant_configs(base, AblationConfig(drop_terms=["gamma"]))
    # Soft targets off when every other term is off too: the hard-label student under another name.
    with pytest.raises(ConfigError, match="'no-alpha' trains the same loss as 'hard-labels'"):
        variant_configs(DistillConfig(alpha=0.7), AblationConfig(drop_terms=["alpha"]))


@pytest.fixture(scope="module")
def toy(tiny_bert_dir, tmp_path_factory):
    teacher = load_classifier(str(tiny_bert_dir))
    splits = make_splits(make_texts(120), 0.2, 0.2, seed=0)
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    return teacher, splits, tok


def _pruned(teacher):
    student, report = prune(teacher, PruneConfig(layer_ratio=0.5), _calibration())
    student.config.edgekd_layout = report.layout
    return student


def test_soft_targets_off_make_teacher_logits_irrelevant_and_the_teacher_idle(toy):
    teacher, splits, tok = toy
    cfg = DistillConfig(epochs=1, batch_size=16, learning_rate=1e-3, alpha=0.0, device="cpu")
    start = _pruned(teacher)
    trained = []
    for fill in (0.0, 7.0):  # two very different sets of "teacher logits"
        student = copy.deepcopy(start)
        logits = np.full((len(splits.train), 2), fill, dtype=np.float32)
        logits[:, 0] *= -1
        distill(student, teacher, tok, splits, cfg, 0, 32, CPU, teacher_logits=logits)
        trained.append(student.state_dict())
    assert all(torch.equal(trained[0][k], trained[1][k]) for k in trained[0])
    assert not torch.equal(trained[0]["classifier.weight"], start.state_dict()["classifier.weight"])

    calls = []
    hook = teacher.register_forward_pre_hook(lambda *_: calls.append(1))
    try:
        _, used = train_variant(copy.deepcopy(start), teacher, tok, splits, cfg, 0, 32, CPU)
        assert calls == [] and used is None  # no logits cached, no per-batch forward
        train_variant(copy.deepcopy(start), teacher, tok, splits, cfg.model_copy(update={"alpha": 0.5}), 0, 32, CPU)
        assert len(calls) >= 1  # the soft-target term on: the logits are computed, so the hook does fire
    finally:
        hook.remove()


def test_hard_label_variant_is_plain_cross_entropy_training(toy):
    from edgekd.data.tokenize import encode
    from edgekd.teacher.core import cross_entropy_loss, settings_from
    from edgekd.train import fit

    teacher, splits, tok = toy
    hard = variant_configs(DistillConfig(epochs=1, batch_size=16, learning_rate=1e-3, device="cpu"),
                           AblationConfig())[HARD_LABELS]
    start = _pruned(teacher)
    via_ablation = copy.deepcopy(start)
    train_variant(via_ablation, teacher, tok, splits, hard, 3, 32, CPU)
    plain = copy.deepcopy(start)
    torch.manual_seed(3)
    fit(plain, cross_entropy_loss, encode(tok, splits.train.texts, 32), splits.train.labels,
        encode(tok, splits.validation.texts, 32), splits.validation.labels, tok.pad_token_id, settings_from(hard, 3, CPU))
    a, b = via_ablation.state_dict(), plain.state_dict()
    assert all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)


@pytest.fixture(scope="module")
def ablation_run(tmp_path_factory):
    """teacher -> prune -> distill (beta on, 2 epochs) -> ablation (hard labels, and beta dropped)."""
    from edgekd.pipeline import run_pipeline
    from tests.conftest import write_reviews_csv

    tmp = tmp_path_factory.mktemp("ablation-run")
    model_dir = make_tiny_model_dir(tmp / "model")
    stages = [{"kind": "teacher", "epochs": 3, "batch_size": 16, "learning_rate": 0.002, "patience": 3},
              {"kind": "prune", "head_ratio": 0.5, "layer_ratio": 0.5, "calibration_batches": 2},
              {"kind": "distill", "epochs": 2, "batch_size": 16, "learning_rate": 0.002, "patience": 2, "beta": 1.0},
              {"kind": "ablation", "drop_terms": ["beta"]}]
    path = write_pipeline(tmp / "p.yaml", model_dir, write_reviews_csv(tmp / "r.csv", 200), tmp / "runs", stages)
    result = run_pipeline(load_pipeline(path))
    return {r.kind: json.loads((r.folder / "manifest.json").read_text()) | {"dir": r.folder} for r in result.stages}


def test_ablation_stage_trains_with_the_distill_stage_budget(ablation_run):
    distilled, ablation = ablation_run["distill"], ablation_run["ablation"]
    m = ablation["metrics"]
    assert {k: m["budget"][k] for k in ("epochs", "batch_size", "learning_rate", "patience")} == \
        {k: distilled["config"][k] for k in ("epochs", "batch_size", "learning_rate", "patience")} == \
        {"epochs": 2, "batch_size": 16, "learning_rate": 0.002, "patience": 2}  # not DistillConfig's defaults
    assert m["budget_from"] == distilled["dir"].name
    for name in (HARD_LABELS, "no-beta"):
        v = m["variants"][name]
        assert v["epochs_run"] == distilled["metrics"]["epochs_run"] == 2 and v["steps"] == distilled["metrics"]["steps"]
    assert m["variants"][HARD_LABELS]["loss_weights"]["alpha"] == 0.0
    assert m["variants"]["no-beta"]["loss_weights"] | {"beta": 1.0} == m["distilled_loss_weights"]
    assert "test" not in json.dumps(m)  # the test split is the bench's alone
    out = ablation["outputs"]
    assert set(out) == {"student-hard-labels", "student-no-beta"}
    # Two different losses from the same start: the two saved students must differ.
    weights = [(ablation["dir"] / out[name]["path"] / "model.safetensors").read_bytes() for name in sorted(out)]
    assert weights[0] != weights[1]
    assert {(o["role"], o["source"], o["meta"]["variant"]) for o in out.values()} == \
        {("ablation", "pruned", HARD_LABELS), ("ablation", "pruned", "no-beta")}
    folder = ablation["dir"]
    hard = load_classifier(str(folder / out["student-hard-labels"]["path"]))
    student = load_classifier(str(distilled["dir"] / "model"))
    assert hard.classifier.weight.shape == student.classifier.weight.shape  # the same pruned architecture
    assert not torch.equal(hard.classifier.weight, student.classifier.weight)


# ---- bench rows without timing, and the report's ablation section ----

@pytest.fixture(scope="module")
def bench_with_ablation(ablation_run, tmp_path_factory):
    from edgekd.artifacts import stage_outputs
    from edgekd.bench.config import BenchConfig
    from edgekd.bench.core import run_benchmark
    from edgekd.bench.inputs import from_texts
    from edgekd.bench.stage import plan_targets, references
    from edgekd.data.split import load_splits

    run_dir = ablation_run["ablation"]["dir"].parent
    history, artifacts = [], {}
    for kind in ("teacher", "prune", "distill", "ablation"):
        folder = ablation_run[kind]["dir"]
        manifest = json.loads((folder / "manifest.json").read_text())
        history.append({**manifest, "folder": folder.name})
        artifacts.update(stage_outputs(folder, manifest))
    data = next(run_dir.glob("00-data-*"))
    history.insert(0, {**json.loads((data / "manifest.json").read_text()), "folder": data.name})
    cfg = BenchConfig(rounds=2, sample=8, warmup=1, turn_warmup=1, fixed_runs=2, throughput_batch=4,
                      throughput_batches=1, threads=[1], bundle=False, cuda="off")
    # One ablation row is enough here (each row is a worker process to start); the report test adds a second.
    targets = plan_targets({k: v for k, v in artifacts.items() if k not in ("pruned", "student-no-beta")}, cfg)
    splits = load_splits(data)
    inputs = from_texts(artifacts["student"].tokenizer / "tokenizer.json", splits.test.texts, splits.test.labels, 32,
                        16, cfg.sample, 0, tmp_path_factory.mktemp("inputs"), describe="test")
    return run_benchmark(targets, inputs, cfg, splits.label_names, references(targets)), history, targets


def test_bench_scores_accuracy_only_rows_without_timing_them(bench_with_ablation):
    bench, _, targets = bench_with_ablation
    assert [(t.role, t.timed) for t in targets] == [("teacher", True), ("student", True), ("ablation", False)]
    rows = {r["model"]: r for r in bench["rows"]}
    row = rows["student-hard-labels"]
    assert row["timed"] is False and row["role"] == "ablation" and row["variant"] == HARD_LABELS
    assert row["latency_ms"] == {} and row["rounds_p50_ms"] == {} and row["throughput_eps"] == {}
    assert "speedup_vs" not in row and "first_inference_ms" not in row
    assert 0.0 <= row["accuracy"] <= 1.0 and set(row["per_class"]) == set(bench["label_names"])
    assert len(row["predictions"]) == bench["inputs"]["rows"]
    timed = rows["student"]
    assert timed["timed"] is True and timed["latency_ms"]["real_b1_t1"]["runs"] == 2 * 8
    assert timed["speedup_vs"]["teacher pytorch cpu"]["real_b1_t1"]["n"] == 2


def _report(bench, history):
    from edgekd.report.core import build_report

    return build_report(copy.deepcopy(bench), history, {"name": "tiny"}, "real_b1_t1")


def test_report_has_an_ablation_section_only_with_ablation_rows(bench_with_ablation, tmp_path):
    from edgekd.report.core import write_report
    from edgekd.report.markdown import render_markdown

    bench, history, _ = bench_with_ablation
    bench = copy.deepcopy(bench)
    second = copy.deepcopy(next(r for r in bench["rows"] if r["role"] == "ablation"))
    second.update(name="student-no-beta pytorch cpu", model="student-no-beta", variant="no-beta", accuracy=0.5)
    bench["rows"].append(second)
    report = _report(bench, history)
    a = report["ablation"]
    assert a["split"] == "test" and a["reference"] == "student pytorch cpu" and a["budget"]["epochs"] == 2
    assert [r["what"] for r in a["rows"]] == ["teacher", "distilled student", "hard-label student (no distillation)",
                                              "distilled, beta = 0"]
    rows = {r["model"]: r for r in bench["rows"]}
    hard = next(r for r in a["rows"] if r["variant"] == HARD_LABELS)
    assert hard["accuracy_delta_pt"] == round(100 * (rows["student-hard-labels"]["accuracy"]
                                                     - rows["student"]["accuracy"]), 2)
    assert hard["recall"] == {k: v["recall"] for k, v in rows["student-hard-labels"]["per_class"].items()}
    assert hard["validation_accuracy"] == history[-1]["metrics"]["variants"][HARD_LABELS]["validation"]["accuracy"]
    assert next(r for r in a["rows"] if r["what"] == "distilled student")["accuracy_delta_pt"] == 0.0
    assert a["rows"][-1]["validation_accuracy"] == history[-1]["metrics"]["variants"]["no-beta"]["validation"][
        "accuracy"] and a["rows"][-1]["accuracy_delta_pt"] == round(100 * (0.5 - rows["student"]["accuracy"]), 2)

    md = render_markdown(report)
    section = md.split("## Ablation: does distillation help?", 1)[1]
    assert "| student-hard-labels pytorch cpu | hard-label student (no distillation) |" in section
    models = md.split("## Models", 1)[1].split("##", 1)[0]
    assert "student-hard-labels" not in models and "| student pytorch cpu |" in models  # untimed: not in timing tables
    # the plots skip the untimed ablation rows (the timed ones still get the runtime plots)
    assert set(write_report(report, tmp_path)) == {"report.json", "report.md", "report.png", "report_latency.png",
                                                   "report_size.png"}

    plain = copy.deepcopy(bench)
    plain["rows"] = [r for r in plain["rows"] if r["role"] != "ablation"]
    without = _report(plain, history)
    assert "ablation" not in without and "Ablation" not in render_markdown(without)


def _load_script(name: str):
    return load_benchmark_script(name)


def test_readme_renderer_and_result_comparison_accept_untimed_rows():
    readme, compare = _load_script("readme_results"), _load_script("compare_results")
    summary = json.loads(readme.results_in_order(ROOT / "benchmarks" / "results")[-1].read_text())
    with_untimed = copy.deepcopy(summary)
    student = next(r for r in summary["report"]["rows"] if r["role"] == "student" and r["format"] == "pytorch")
    untimed = {k: v for k, v in student.items() if k not in ("first_inference_ms", "speedup_vs")}
    untimed.update(name="student-hard-labels pytorch cpu", model="student-hard-labels", role="ablation", timed=False,
                   latency_ms={}, rounds_p50_ms={}, cv={}, by_length={}, throughput_eps={})
    with_untimed["report"]["rows"].append(untimed)
    table = lambda text: text.split("\n\n- ")[0]  # noqa: E731  (the table, before the notes)
    assert table(readme.render(with_untimed, "r.json")) == table(readme.render(summary, "r.json"))
    assert compare.compare(with_untimed, with_untimed) == compare.compare(summary, summary)


def test_dropping_the_soft_targets_also_drops_the_teacher_labelled_extra_text():
    """Extra text is learned from soft targets only: 'no-alpha' must not keep learning from the teacher."""
    base = DistillConfig(alpha=0.7, beta=1.0, extra_data={"unlabelled": True, "augment_copies": 1})
    variants = variant_configs(base, AblationConfig(hard_labels=False, drop_terms=["alpha", "beta"]))
    assert not variants["no-alpha"].extra_data.enabled and variants["no-alpha"].beta == 1.0
    assert variants["no-beta"].extra_data.enabled  # other terms keep the distilled student's extra text


def test_the_extra_text_variant_keeps_the_loss_and_drops_only_the_extra_text():
    base = DistillConfig(alpha=0.7, beta=1.0, extra_data={"unlabelled": True, "augment_copies": 1})
    variants = variant_configs(base, AblationConfig(hard_labels=False, extra_data=True))
    assert list(variants) == ["no-extra-data"]
    no_extra = variants["no-extra-data"]
    assert not no_extra.extra_data.enabled and (no_extra.alpha, no_extra.beta) == (0.7, 1.0)
    assert AblationConfig(hard_labels=False, extra_data=True).provides() == ["student-no-extra-data"]
    with pytest.raises(ConfigError, match="ablation.extra_data: the distill stage uses no teacher-labelled extra text"):
        variant_configs(DistillConfig(alpha=0.7), AblationConfig(extra_data=True))
