import numpy as np
import pytest
import torch

from edgekd.data import make_splits
from edgekd.data.tokenize import encode, pad_batch
from edgekd.distill.config import DistillConfig
from edgekd.distill.core import default_layer_map, distill
from edgekd.distill.losses import SoftTargetLoss
from edgekd.distill.relations import RelationLoss, record_qkv
from edgekd.errors import ConfigError
from edgekd.models import load_classifier
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import prune
from tests.conftest import build_tokenizer, make_texts, make_tiny_model_dir
from tests.unit.test_prune import _calibration


@pytest.fixture(scope="module")
def setup(tiny_bert_dir, tmp_path_factory):
    teacher = load_classifier(str(tiny_bert_dir), attn_implementation="eager")
    splits = make_splits(make_texts(120), 0.2, 0.2, seed=0)
    tok = build_tokenizer(tmp_path_factory.mktemp("tok"))
    return teacher, splits, tok


def _student(teacher, **ratios):
    student, report = prune(teacher, PruneConfig(**ratios), _calibration())
    student.config.edgekd_layout = report.layout
    return student


def test_default_layer_map_follows_pruned_source_layers(setup):
    teacher, _, _ = setup
    assert default_layer_map(_student(teacher, layer_ratio=0.5), teacher) == {0: 0, 1: 3}


@pytest.mark.parametrize("hidden_ratio", [0.0, 0.25])
def test_distill_all_terms_keeps_teacher_frozen(setup, hidden_ratio):
    teacher, splits, tok = setup
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _student(teacher, layer_ratio=0.5, hidden_ratio=hidden_ratio)
    cfg = DistillConfig(epochs=1, batch_size=16, beta=1.0, gamma=1.0, device="cpu", learning_rate=1e-3)
    result, logits = distill(student, teacher, tok, splits, cfg, seed=0, max_length=32, device=torch.device("cpu"))
    assert logits.shape == (len(splits.train), 2) and np.isfinite(logits).all()
    assert result.steps == -(-len(splits.train) // 16) and len(result.history) == 1
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())
    assert not teacher.training


def test_cached_logits_are_reused(setup):
    teacher, splits, tok = setup
    student = _student(teacher, layer_ratio=0.5)
    fake = np.zeros((len(splits.train), 2), dtype=np.float32)
    cfg = DistillConfig(epochs=1, batch_size=32, device="cpu")
    _, logits = distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"), teacher_logits=fake)
    assert logits is fake


def test_bad_layer_map_is_named(setup):
    teacher, splits, tok = setup
    cfg = DistillConfig(epochs=1, beta=1.0, layer_map={0: 9}, device="cpu")
    with pytest.raises(ConfigError, match="layer_map"):
        distill(_student(teacher, layer_ratio=0.5), teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))


def test_distilled_student_learns_the_toy_task_from_a_trained_teacher(tiny_bert_dir, tmp_path):
    """Soft targets only (alpha=1): whatever the student learns of the labels, it learns from the teacher."""
    from edgekd.evaluate import evaluate
    from edgekd.teacher.config import TeacherConfig
    from edgekd.teacher.core import finetune

    torch.manual_seed(0)
    splits = make_splits(make_texts(300, seed=1), 0.2, 0.2, seed=0)
    tok = build_tokenizer(tmp_path / "tok")
    teacher = load_classifier(str(tiny_bert_dir), label_names=splits.label_names)
    cpu = torch.device("cpu")
    finetune(teacher, tok, splits, TeacherConfig(epochs=4, batch_size=16, learning_rate=2e-3, patience=4), 0, 32, cpu)
    assert evaluate(teacher, tok, splits.validation, 2, 32)["accuracy"] > 0.85
    student = _student(teacher, head_ratio=0.5, ffn_ratio=0.5, layer_ratio=0.5)
    student.apply(student._init_weights)  # forget the teacher's weights: start from scratch, near chance
    chance = evaluate(student, tok, splits.validation, 2, 32)["accuracy"]
    assert chance < 0.7
    cfg = DistillConfig(epochs=4, batch_size=16, learning_rate=2e-3, alpha=1.0, patience=4, device="cpu")
    result, _ = distill(student, teacher, tok, splits, cfg, seed=0, max_length=32, device=cpu)
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < 0.7 * losses[0]  # the KD loss falls
    assert result.best_accuracy > max(0.8, chance + 0.1)  # and the labels were learned through it


# --- relation, contrastive and temperature-schedule terms ---------------------------------------------


def _batch(tok, texts, extra_pad=0):
    batch = pad_batch(encode(tok, texts, 32), tok.pad_token_id)
    if extra_pad:  # the same texts with more padding columns on the right
        pad = torch.full((len(texts), extra_pad), tok.pad_token_id)
        batch = {"input_ids": torch.cat([batch["input_ids"], pad], 1),
                 "attention_mask": torch.cat([batch["attention_mask"], torch.zeros_like(pad)], 1)}
    return batch


@pytest.fixture(scope="module")
def peaked_teacher(tmp_path_factory):
    """Init range 0.2: peaked relations (at 0.02 every relation is near uniform and the loss tiny)."""
    return load_classifier(str(make_tiny_model_dir(tmp_path_factory.mktemp("peaked"), initializer_range=0.2)))


@torch.no_grad()
def _relation_value(student, teacher, batch, layer_map, heads=4):
    student.eval(), teacher.eval()
    with record_qkv(student, layer_map) as s_qkv, record_qkv(teacher, layer_map.values()) as t_qkv:
        student(**batch), teacher(**batch)
    return RelationLoss(layer_map, ("qq", "kk", "vv"), heads)(s_qkv, t_qkv, batch["attention_mask"]).item()


def test_relation_loss_zero_for_same_model_positive_for_pruned_student_and_pad_invariant(setup, peaked_teacher):
    _, splits, tok = setup
    teacher = peaked_teacher
    texts = splits.validation.texts[:6]
    batch = _batch(tok, texts)
    assert batch["attention_mask"].min() == 0  # the texts differ in length: there is padding to ignore
    assert _relation_value(teacher, teacher, batch, {3: 3}) == pytest.approx(0.0, abs=1e-6)
    student = _student(teacher, head_ratio=0.5, layer_ratio=0.5)  # 2 heads (width 32) against 4 (width 64)
    value = _relation_value(student, teacher, batch, {1: 3})
    assert value > 0.1
    assert _relation_value(student, teacher, _batch(tok, texts, extra_pad=5), {1: 3}) == pytest.approx(value, rel=1e-4)


def test_relation_heads_must_divide_both_widths(setup):
    teacher, splits, tok = setup
    student = _student(teacher, head_ratio=0.5, layer_ratio=0.5)  # attention widths 32 and 64
    cfg = DistillConfig(epochs=1, relation_weight=1.0, relation_heads=3, device="cpu")
    named = r"distill\.relation_heads: 3 does not divide the student's attention width 32"
    with pytest.raises(ConfigError, match=named):
        distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))
    cfg = DistillConfig(epochs=1, relation_weight=1.0, relation_heads=4, relation_layers={1: 7}, device="cpu")
    with pytest.raises(ConfigError, match=r"distill\.relation_layers: 1: 7 out of range"):
        distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))


def test_student_learns_teacher_relations(setup, peaked_teacher):
    _, splits, tok = setup
    teacher = peaked_teacher
    batch = _batch(tok, splits.validation.texts[:16])
    after = {}
    for weight in (0.0, 1.0):
        torch.manual_seed(0)
        student = _student(teacher, head_ratio=0.5, layer_ratio=0.5)
        student.apply(student._init_weights)  # far from the teacher's relations
        before = _relation_value(student, teacher, batch, {1: 3})
        cfg = DistillConfig(epochs=1, batch_size=16, max_steps=15, learning_rate=3e-3, warmup_ratio=0.0, alpha=0.5,
                            relation_weight=weight, relation_heads=4, device="cpu")
        distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))
        after[weight] = _relation_value(student, teacher, batch, {1: 3})  # last -> last is the default map
    assert after[1.0] < 0.5 * before and after[1.0] < 0.5 * after[0.0]  # learned through the term, not by chance


def test_contrastive_projection_trains_and_teacher_stays_frozen(setup, monkeypatch):
    teacher, splits, tok = setup
    before = {k: v.clone() for k, v in teacher.state_dict().items()}
    student = _student(teacher, layer_ratio=0.5, hidden_ratio=0.25)  # widths 48 -> 64: a real projection
    projections = []
    from edgekd.distill import core

    class Recorded(core.ContrastiveLoss):
        def __init__(self, *args):
            super().__init__(*args)
            projections.append((self, self.projection.weight.detach().clone()))

    monkeypatch.setattr(core, "ContrastiveLoss", Recorded)
    cfg = DistillConfig(epochs=1, batch_size=16, max_steps=3, contrastive_weight=1.0, relation_weight=1.0,
                        relation_heads=8, device="cpu")
    result, _ = distill(student, teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))
    assert result.steps == 3 and np.isfinite(result.history[0]["train_loss"])
    (module, initial), = projections
    assert module.projection.weight.shape == (64, 48)
    assert not torch.equal(module.projection.weight.detach().cpu(), initial)  # the optimiser updated it
    assert all(torch.equal(before[k], v) for k, v in teacher.state_dict().items())


@pytest.mark.parametrize("schedule, expected_last", [("linear", 1.0), ("cosine", 1.0), ("constant", 4.0)])
def test_scheduled_temperature_reaches_its_end_on_the_last_step(setup, monkeypatch, schedule, expected_last):
    teacher, splits, tok = setup
    used = []
    forward = SoftTargetLoss.forward

    def spy(self, *args, temperature=None):
        used.append(temperature)
        return forward(self, *args, temperature=temperature)

    monkeypatch.setattr(SoftTargetLoss, "forward", spy)
    end = None if schedule == "constant" else 1.0
    cfg = DistillConfig(epochs=2, batch_size=32, temperature=4.0, temperature_end=end, temperature_schedule=schedule,
                        patience=5, device="cpu")
    result, _ = distill(_student(teacher, layer_ratio=0.5), teacher, tok, splits, cfg, 0, 32, torch.device("cpu"))
    assert len(used) == result.steps == 2 * -(-len(splits.train) // 32)  # one temperature per step, both epochs
    assert used[0] == 4.0 and used[-1] == pytest.approx(expected_last)
    assert (len(set(used)) == 1) == (schedule == "constant")


def test_distill_config_rejects_unknown_and_inconsistent_keys():
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="relation_wieght"):
        DistillConfig(relation_wieght=1.0)
    with pytest.raises(ValidationError, match="temperature_end is only used by temperature_schedule linear or cosine"):
        DistillConfig(temperature_end=1.0)
    with pytest.raises(ValidationError, match="repeats an entry"):
        DistillConfig(relations=["qq", "qq"])
    with pytest.raises(ValidationError, match="relations.0"):
        DistillConfig(relations=["qv"])
    cfg = DistillConfig(temperature_schedule="cosine")
    assert cfg.final_temperature == cfg.temperature == 2.0 and cfg.relation_weight == cfg.contrastive_weight == 0.0
