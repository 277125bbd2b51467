import numpy as np
import pytest
import torch

from edgekd.data import make_splits
from edgekd.distill.config import DistillConfig
from edgekd.distill.core import default_layer_map, distill
from edgekd.errors import ConfigError
from edgekd.models import load_classifier
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import prune
from tests.conftest import build_tokenizer, make_texts
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
