"""Activation importance, layer selection by measured importance, and widths rounded to a multiple."""

import pytest
import torch

from edgekd.config import validate_pipeline
from edgekd.errors import ConfigError
from edgekd.models import load_classifier, save_classifier
from edgekd.models.arch import base_model, encoder_layers, layer_modules
from edgekd.prune.config import PruneConfig
from edgekd.prune.core import kept_width, prune
from edgekd.prune.importance import activation_scores
from edgekd.prune.layers import block_influence
from tests.conftest import build_tokenizer, make_tiny_model_dir
from tests.unit.test_prune import ARCHS, HEAD_DIM, _calibration, _kept_heads, _logits

NO_DEPTH = dict(layer_ratio=0.0)


@pytest.fixture(scope="module", params=ARCHS)
def tiny_dir(request, tmp_path_factory):
    return make_tiny_model_dir(tmp_path_factory.mktemp(request.param), request.param)


def _ffn_kept_rows(model, student) -> list[list[int]]:
    """Which of the full model's FFN channels each layer kept, by matching up-projection rows."""
    kept = []
    for old, new in zip(encoder_layers(model), encoder_layers(student)):
        old_rows = layer_modules(model, old)["ffn_in"].weight
        rows = layer_modules(student, new)["ffn_in"].weight
        kept.append([int((old_rows == row).all(1).nonzero().squeeze()) for row in rows])
    return kept


@pytest.mark.parametrize("importance, expect_dead_pruned", [("activation", True), ("magnitude", False)])
def test_activation_importance_prunes_the_ffn_channels_that_never_fire(tiny_dir, importance, expect_dead_pruned):
    model = load_classifier(str(tiny_dir))
    dead = torch.randperm(128, generator=torch.Generator().manual_seed(1))[:64].sort().values
    with torch.no_grad():
        for layer in encoder_layers(model):
            parts = layer_modules(model, layer)
            parts["ffn_in"].bias[dead] = -1e4  # GELU(-1e4 + small) == 0: these channels never fire
            parts["ffn_out"].weight[:, dead] *= 50  # ...but have the largest weights, which fools magnitude
    student, report = prune(model, PruneConfig(importance=importance, head_ratio=0.0, ffn_ratio=0.5, **NO_DEPTH),
                            _calibration())
    alive = sorted(set(range(128)) - set(dead.tolist()))
    kept = _ffn_kept_rows(model, student)
    assert report.layout["ffn"] == [64] * 4
    assert (kept == [alive] * 4) is expect_dead_pruned


def test_activation_and_block_influence_ignore_padding(tiny_bert_dir):
    """Extra padding changes what pad positions compute, not the statistics: only real tokens count."""
    model = load_classifier(str(tiny_bert_dir)).eval()
    batch, labels = _calibration(1)[0]
    padded = {k: torch.cat([v, torch.zeros(v.shape[0], 5, dtype=v.dtype)], dim=1) for k, v in batch.items()}
    padded["input_ids"][:, -5:] = 0  # [PAD]
    plain, extra = activation_scores(model, [(batch, labels)]), activation_scores(model, [(padded, labels)])
    for a, b in [(plain.hidden, extra.hidden), *zip(plain.heads, extra.heads), *zip(plain.ffn, extra.ffn)]:
        torch.testing.assert_close(a, b, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(torch.tensor(block_influence(model, [(batch, labels)])),
                               torch.tensor(block_influence(model, [(padded, labels)])), atol=1e-5, rtol=1e-4)


def test_activation_importance_prunes_the_heads_that_write_nothing(tiny_dir):
    model = load_classifier(str(tiny_dir), attn_implementation="eager")
    silent = [[i % 4, (i + 1) % 4] for i in range(4)]  # two heads per layer, different in each layer
    with torch.no_grad():
        for layer, heads in zip(encoder_layers(model), silent):
            parts = layer_modules(model, layer)
            for h in heads:
                block = slice(h * HEAD_DIM, (h + 1) * HEAD_DIM)
                parts["v"].weight[block] = 0.0  # zero values: the head's context slice is exactly zero
                parts["v"].bias[block] = 0.0
                parts["out"].weight[:, block] *= 50  # large weights: magnitude would keep them
    student, report = prune(model, PruneConfig(importance="activation", head_ratio=0.5, ffn_ratio=0.0, **NO_DEPTH),
                            _calibration())
    assert report.layout["heads"] == [2] * 4
    assert _kept_heads(model, student) == [sorted(set(range(4)) - set(heads)) for heads in silent]


def test_activation_importance_prunes_unused_hidden_channels_rounds_and_reloads(tiny_dir, tmp_path):
    """Hidden channels zeroed by every LayerNorm carry nothing: activation importance must remove exactly those;
    0.3 of 64 leaves 44, rounded to a multiple of 16 -> 48 = 64 - 16 unused. The result reloads."""
    model = load_classifier(str(tiny_dir))
    unused = torch.arange(3, 64, 4)  # 16 channels
    with torch.no_grad():
        for module in base_model(model).modules():
            if isinstance(module, torch.nn.LayerNorm):
                module.weight[unused] = 0.0
                module.bias[unused] = 0.0
    cfg = PruneConfig(importance="activation", head_ratio=0.5, ffn_ratio=0.6, hidden_ratio=0.3, multiple_of=16,
                      layer_ratio=0.5)
    student, report = prune(model, cfg, _calibration())
    assert report.hidden_after == 48 and report.layout["ffn"] == [48, 48]  # 128 * 0.4 = 51 -> 48
    used = sorted(set(range(64)) - set(unused.tolist()))
    full = base_model(model).embeddings.word_embeddings.weight
    torch.testing.assert_close(base_model(student).embeddings.word_embeddings.weight, full[:, used], rtol=0, atol=0)
    save_classifier(student, build_tokenizer(tmp_path / "tok"), tmp_path / "pruned", layout=report.layout)
    batch = _calibration(1)[0][0]
    reloaded = load_classifier(str(tmp_path / "pruned"))
    torch.testing.assert_close(_logits(reloaded, batch), _logits(student.eval(), batch))


@pytest.mark.parametrize("width, ratio, multiple_of, expected", [
    (128, 0.5, 1, 64), (10, 0.9, 1, 1),  # 10 * (1 - 0.9) is 0.999..., still one channel
    (128, 0.6, 32, 64),  # 51 -> nearest multiple 64
    (64, 0.3, 16, 48),  # 44 -> 48
    (128, 0.9, 32, 32),  # 12 would round to 0: one multiple instead
    (20, 0.5, 32, 20),  # a multiple wider than the layer: the full width
    (100, 0.1, 64, 64),  # 90 -> 128 exceeds the width: the multiple below
])
def test_kept_width_rounds_the_number_kept(width, ratio, multiple_of, expected):
    assert kept_width(width, ratio, multiple_of) == expected


def _make_layer_identity(model, index: int) -> None:
    """Zero the attention and FFN output projections of one layer: each sub-block adds nothing, so the layer's
    output is LayerNorm(LayerNorm(input)) == its input (already a LayerNorm output with unit weight, zero bias)."""
    with torch.no_grad():
        parts = layer_modules(model, encoder_layers(model)[index])
        for key in ("out", "ffn_out"):
            parts[key].weight.zero_()
            parts[key].bias.zero_()


@pytest.fixture(scope="module", params=ARCHS)
def model_with_identity_layer(request, tmp_path_factory):
    # init 0.2: the other layers visibly transform their input, so "least influential" is unambiguous
    folder = make_tiny_model_dir(tmp_path_factory.mktemp(request.param), request.param, initializer_range=0.2)
    model = load_classifier(str(folder))
    _make_layer_identity(model, 2)
    return model


@pytest.mark.parametrize("selection", ["block_influence", "skip_loss"])
def test_scored_layer_selection_drops_the_identity_layer(model_with_identity_layer, selection):
    cfg = PruneConfig(layer_selection=selection, layer_ratio=0.25, head_ratio=0.0, ffn_ratio=0.0)
    _, report = prune(model_with_identity_layer, cfg, _calibration())
    assert report.kept_layers == [0, 1, 3]  # "even" would keep [0, 2, 3]
    scores = report.layer_selection["scores"]
    assert report.layer_selection["method"] == selection and len(scores) == 4
    others = [s for i, s in enumerate(scores) if i != 2]
    assert scores[2] < 1e-4 and min(others) > 100 * max(scores[2], 1e-7)


GREEDY = PruneConfig(layer_selection="skip_loss", skip_loss_greedy=True, layer_ratio=0.5, head_ratio=0.0, ffn_ratio=0.0)


def test_greedy_skip_loss_drops_the_identity_layer_first(model_with_identity_layer):
    _, report = prune(model_with_identity_layer, GREEDY, _calibration())
    rounds = report.layer_selection["rounds"]
    assert len(rounds) == 2 and rounds[0]["dropped"] == 2
    assert sorted(rounds[1]["damage"]) == ["0", "1", "3"]  # measured on the model without layer 2
    assert report.kept_layers == sorted({0, 1, 3} - {rounds[1]["dropped"]})


def test_greedy_skip_loss_remeasures_on_the_shortened_model(tmp_path):
    # Without an identity layer, the second round's damages are those of skipping two layers: new numbers.
    plain = load_classifier(str(make_tiny_model_dir(tmp_path / "m", "bert", initializer_range=0.2)))
    rounds = prune(plain, GREEDY, _calibration())[1].layer_selection["rounds"]
    first, second = rounds[0]["damage"], rounds[1]["damage"]
    assert second != {k: v for k, v in first.items() if k in second}, (first, second)


def test_keep_layers_overrides_layer_selection(model_with_identity_layer):
    cfg = PruneConfig(layer_selection="block_influence", keep_layers=[2, 0], head_ratio=0.0, ffn_ratio=0.0)
    _, report = prune(model_with_identity_layer, cfg, _calibration())
    assert report.kept_layers == [0, 2] and report.layer_selection == {"method": "keep_layers"}


def test_summary_shows_why_layers_were_kept():
    metrics = {"parameters_before": 2e6, "parameters_after": 1e6, "kept_layers": [0, 1, 3],
               "layout": {"heads": [2, 2, 2], "ffn": [64, 64, 64]}, "validation": {"accuracy": 0.5},
               "layer_selection": {"method": "block_influence", "scores": [0.2, 0.1, 1e-6, 0.3]}}
    assert "block_influence scores 0.2, 0.1, 1e-06, 0.3" in PruneConfig.summary(metrics)
    del metrics["layer_selection"]  # manifests written before layer selection existed
    assert "layers [0, 1, 3]," in PruneConfig.summary(metrics)


def _prune_error(**fields) -> str:
    with pytest.raises(ConfigError) as info:
        validate_pipeline({"stages": [{"kind": "teacher"}, {"kind": "prune", **fields}]})
    return str(info.value)


@pytest.mark.parametrize("fields, expected", [
    ({"multiple_of": 0}, "stages.1.prune.multiple_of: Input should be greater than or equal to 1 (got 0)"),
    ({"multiple_of": 8192}, "stages.1.prune.multiple_of: Input should be less than or equal to 4096"),
    ({"importance": "fisher"}, "stages.1.prune.importance: Input should be 'taylor', 'magnitude' or 'activation'"),
    ({"layer_selection": "random"},
     "stages.1.prune.layer_selection: Input should be 'even', 'block_influence' or 'skip_loss'"),
    ({"skip_loss_greedy": True, "layer_selection": "block_influence"},
     "skip_loss_greedy: true applies only to layer_selection: skip_loss (got layer_selection: block_influence)"),
    ({"keep_layers": []}, "keep_layers must name at least one layer"),
    ({"calibration_batches": 0}, "stages.1.prune.calibration_batches: Input should be greater than or equal to 1"),
])
def test_bad_values_are_rejected_naming_the_field(fields, expected):
    assert expected in _prune_error(**fields)


def test_scored_selection_with_nothing_to_drop_keeps_every_layer_and_records_scores(tiny_bert_dir):
    cfg = PruneConfig(layer_selection="skip_loss", skip_loss_greedy=True, layer_ratio=0.0, head_ratio=0.0,
                      ffn_ratio=0.0)
    _, report = prune(load_classifier(str(tiny_bert_dir)), cfg, _calibration())
    assert report.kept_layers == [0, 1, 2, 3] and report.layer_selection["rounds"] == []
    assert len(report.layer_selection["scores"]) == 4
